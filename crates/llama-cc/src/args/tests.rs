use super::*;
use crate::compilation::{CLANG_EXTENSIONS, EXTENSIONS, GCC_EXTENSIONS, LANGUAGE_NAMES};

fn words(line: &str) -> Vec<OsString> {
    line.split_whitespace().map(OsString::from).collect()
}

fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

fn gcc(line: &str) -> Verdict {
    parse(&words(line), Path::new("/work"), Family::Gcc)
}

fn clang(line: &str) -> Verdict {
    parse(&words(line), Path::new("/work"), Family::Clang)
}

fn local(reason: LocalReason) -> Verdict {
    Verdict::Local(reason)
}

#[track_caller]
fn compiled(verdict: Verdict) -> Compilation {
    match verdict {
        Verdict::Compile(c) => c,
        Verdict::Local(reason) => panic!("expected a compilation, got {reason:?}"),
    }
}

/// What `line` compiles when only its source, language and output matter.
fn object(line: &str, source: &str, language: Language, output: &str) -> Compilation {
    Compilation {
        args: words(line),
        source: source.into(),
        language,
        mode: Mode::Object,
        output: output.into(),
        explicit_output: true,
        depfile: None,
        extra_outputs: Vec::new(),
        includes: IncludeSearch::default(),
        forced_includes: Vec::new(),
        file_inputs: Vec::new(),
        tool_prefixes: Vec::new(),
        native_cpu: false,
        color_diagnostics: None,
        has_debug_info: false,
    }
}

fn depfile(path: &str, kind: DepKind) -> DepFile {
    DepFile {
        path: path.into(),
        kind,
        targets: Vec::new(),
        phony_targets: false,
        missing_headers_generated: false,
    }
}

// Command lines from real builds.

#[test]
fn lua() {
    let line =
        "-std=gnu99 -O2 -Wall -Wextra -DLUA_COMPAT_5_3 -DLUA_USE_LINUX    -c -o lapi.o lapi.c";
    let expected = object(line, "lapi.c", Language::C, "lapi.o");
    assert_eq!(gcc(line), Verdict::Compile(expected.clone()));
    assert_eq!(clang(line), Verdict::Compile(expected));
}

#[test]
fn linux_kernel_c() {
    let line = "-Wp,-MMD,kernel/.fork.o.d -nostdinc -I./arch/x86/include \
        -I./arch/x86/include/generated -I./include -I./arch/x86/include/uapi \
        -I./arch/x86/include/generated/uapi -I./include/uapi -I./include/generated/uapi \
        -include ./include/linux/compiler-version.h -include ./include/linux/kconfig.h \
        -include ./include/linux/compiler_types.h -D__KERNEL__ -fmacro-prefix-map=./= \
        -std=gnu11 -fshort-wchar -funsigned-char -fno-common -fno-PIE -fno-strict-aliasing \
        -mno-sse -mno-mmx -mno-sse2 -mno-3dnow -mno-avx -fcf-protection=branch \
        -fno-jump-tables -m64 -falign-jumps=1 -falign-loops=1 -mno-80387 \
        -mno-fp-ret-in-387 -mpreferred-stack-boundary=3 -mskip-rax-setup -mtune=generic \
        -mno-red-zone -mcmodel=kernel -Wno-sign-compare -fno-asynchronous-unwind-tables \
        -mindirect-branch=thunk-extern -mindirect-branch-register \
        -mfunction-return=thunk-extern -fpatchable-function-entry=16,16 \
        -fno-delete-null-pointer-checks -O2 -fstack-protector-strong \
        -fno-omit-frame-pointer -fno-optimize-sibling-calls -pg -mrecord-mcount -mfentry \
        -DCC_USING_FENTRY -falign-functions=16 -fno-strict-overflow -fstack-check=no \
        -fconserve-stack -Wall -Wundef -Werror=implicit-function-declaration -g -gdwarf-5 \
        -DKBUILD_MODFILE=\"kernel/fork\" -DKBUILD_BASENAME=\"fork\" \
        -DKBUILD_MODNAME=\"fork\" -D__KBUILD_MODNAME=kmod_fork -c -o kernel/fork.o \
        kernel/fork.c";
    assert_eq!(
        gcc(line),
        Verdict::Compile(Compilation {
            depfile: Some(depfile("kernel/.fork.o.d", DepKind::UserHeadersOnly)),
            includes: IncludeSearch {
                bracket: paths(&[
                    "./arch/x86/include",
                    "./arch/x86/include/generated",
                    "./include",
                    "./arch/x86/include/uapi",
                    "./arch/x86/include/generated/uapi",
                    "./include/uapi",
                    "./include/generated/uapi",
                ]),
                nostdinc: true,
                ..IncludeSearch::default()
            },
            forced_includes: paths(&[
                "./include/linux/compiler-version.h",
                "./include/linux/kconfig.h",
                "./include/linux/compiler_types.h",
            ]),
            has_debug_info: true,
            ..object(line, "kernel/fork.c", Language::C, "kernel/fork.o")
        })
    );
}

#[test]
fn linux_kernel_assembly() {
    let line = "-Wp,-MD,arch/x86/entry/.entry_64.o.d -nostdinc -I./arch/x86/include \
        -I./include -include ./include/linux/kconfig.h -D__KERNEL__ -fmacro-prefix-map=./= \
        -D__ASSEMBLY__ -fno-PIE -m64 -Wa,-gdwarf-5 -Wa,--noexecstack \
        -DKBUILD_MODFILE=\"arch/x86/entry/entry_64\" -c -o arch/x86/entry/entry_64.o \
        arch/x86/entry/entry_64.S";
    assert_eq!(
        gcc(line),
        Verdict::Compile(Compilation {
            depfile: Some(depfile("arch/x86/entry/.entry_64.o.d", DepKind::AllHeaders)),
            includes: IncludeSearch {
                bracket: paths(&["./arch/x86/include", "./include"]),
                nostdinc: true,
                ..IncludeSearch::default()
            },
            forced_includes: paths(&["./include/linux/kconfig.h"]),
            // -Wa,-gdwarf-5 is the assembler's business, not -g.
            has_debug_info: false,
            ..object(
                line,
                "arch/x86/entry/entry_64.S",
                Language::AsmWithCpp,
                "arch/x86/entry/entry_64.o"
            )
        })
    );
}

#[test]
fn linux_kernel_host_program() {
    let compile = "-Wp,-MMD,scripts/basic/.fixdep.d -Wall -Wmissing-prototypes \
        -Wstrict-prototypes -O2 -fomit-frame-pointer -std=gnu11 -I ./scripts/include \
        -c -o scripts/basic/fixdep.o scripts/basic/fixdep.c";
    assert_eq!(
        gcc(compile),
        Verdict::Compile(Compilation {
            depfile: Some(depfile("scripts/basic/.fixdep.d", DepKind::UserHeadersOnly)),
            includes: IncludeSearch {
                bracket: paths(&["./scripts/include"]),
                ..IncludeSearch::default()
            },
            ..object(
                compile,
                "scripts/basic/fixdep.c",
                Language::C,
                "scripts/basic/fixdep.o"
            )
        })
    );
    // How the kernel really builds it: compile and link in one.
    let build = "-Wp,-MMD,scripts/basic/.fixdep.d -Wall -O2 -std=gnu11 \
        -o scripts/basic/fixdep scripts/basic/fixdep.c";
    assert_eq!(gcc(build), local(LocalReason::Link));
}

#[test]
fn cmake() {
    let line = "-DFOO=1 -I/abs/include -isystem /abs/third_party/include -O3 -DNDEBUG \
        -std=gnu++17 -MD -MT CMakeFiles/x.dir/a.cc.o -MF CMakeFiles/x.dir/a.cc.o.d \
        -o CMakeFiles/x.dir/a.cc.o -c /abs/a.cc";
    let expected = Compilation {
        depfile: Some(DepFile {
            targets: vec![DepTarget::Plain("CMakeFiles/x.dir/a.cc.o".into())],
            ..depfile("CMakeFiles/x.dir/a.cc.o.d", DepKind::AllHeaders)
        }),
        includes: IncludeSearch {
            bracket: paths(&["/abs/include"]),
            system: paths(&["/abs/third_party/include"]),
            ..IncludeSearch::default()
        },
        ..object(line, "/abs/a.cc", Language::Cxx, "CMakeFiles/x.dir/a.cc.o")
    };
    assert_eq!(gcc(line), Verdict::Compile(expected.clone()));
    assert_eq!(
        parse(&words(line), Path::new("/b"), Driver::cxx(Family::Clang)),
        Verdict::Compile(expected)
    );
}

#[test]
fn libtool() {
    let line = "-DHAVE_CONFIG_H -I. -I.. -g -O2 -MT foo.lo -MD -MP -MF .deps/foo.Tpo \
        -c foo.c  -fPIC -DPIC -o .libs/foo.o";
    assert_eq!(
        gcc(line),
        Verdict::Compile(Compilation {
            depfile: Some(DepFile {
                targets: vec![DepTarget::Plain("foo.lo".into())],
                phony_targets: true,
                ..depfile(".deps/foo.Tpo", DepKind::AllHeaders)
            }),
            includes: IncludeSearch {
                bracket: paths(&[".", ".."]),
                ..IncludeSearch::default()
            },
            has_debug_info: true,
            ..object(line, "foo.c", Language::C, ".libs/foo.o")
        })
    );
}

#[test]
fn git() {
    let line = "-o builtin/add.o -c -MF builtin/.depend/add.o.d -MQ builtin/add.o -MMD -MP \
        -g -O2 -Wall -I. -DHAVE_ALLOCA_H -DUSE_CURL_FOR_IMAP_SEND -DSHA1_DC \
        -DSHA256_BLK -DGIT_HOST_CPU=\"x86_64\" builtin/add.c";
    assert_eq!(
        gcc(line),
        Verdict::Compile(Compilation {
            depfile: Some(DepFile {
                targets: vec![DepTarget::Quoted("builtin/add.o".into())],
                phony_targets: true,
                ..depfile("builtin/.depend/add.o.d", DepKind::UserHeadersOnly)
            }),
            includes: IncludeSearch {
                bracket: paths(&["."]),
                ..IncludeSearch::default()
            },
            has_debug_info: true,
            ..object(line, "builtin/add.c", Language::C, "builtin/add.o")
        })
    );
}

#[test]
fn openssl() {
    let line = "-I. -Iinclude -Iproviders/common/include -Iproviders/implementations/include \
        -DAES_ASM -DBSAES_ASM -fPIC -pthread -m64 -Wa,--noexecstack -Wall -O3 \
        -DOPENSSL_USE_NODELETE -DL_ENDIAN -DOPENSSL_PIC \
        -DOPENSSLDIR=\"/usr/local/ssl\" -DENGINESDIR=\"/usr/local/lib64/engines-3\" \
        -DMODULESDIR=\"/usr/local/lib64/ossl-modules\" -DOPENSSL_BUILDING_OPENSSL -DNDEBUG \
        -MMD -MF crypto/aes/libcrypto-lib-aes_core.d.tmp \
        -MT crypto/aes/libcrypto-lib-aes_core.o -c \
        -o crypto/aes/libcrypto-lib-aes_core.o crypto/aes/aes_core.c";
    assert_eq!(
        gcc(line),
        Verdict::Compile(Compilation {
            depfile: Some(DepFile {
                targets: vec![DepTarget::Plain(
                    "crypto/aes/libcrypto-lib-aes_core.o".into()
                )],
                ..depfile(
                    "crypto/aes/libcrypto-lib-aes_core.d.tmp",
                    DepKind::UserHeadersOnly
                )
            }),
            includes: IncludeSearch {
                bracket: paths(&[
                    ".",
                    "include",
                    "providers/common/include",
                    "providers/implementations/include",
                ]),
                ..IncludeSearch::default()
            },
            ..object(
                line,
                "crypto/aes/aes_core.c",
                Language::C,
                "crypto/aes/libcrypto-lib-aes_core.o"
            )
        })
    );
}

#[test]
fn fedora_hardening_flags_pass() {
    let line = "-O2 -flto=auto -ffat-lto-objects -fexceptions -g -grecord-gcc-switches -pipe \
        -Wall -Werror=format-security -Wp,-D_FORTIFY_SOURCE=3 -Wp,-D_GLIBCXX_ASSERTIONS \
        -specs=/usr/lib/rpm/redhat/redhat-hardened-cc1 -fstack-protector-strong \
        -specs=/usr/lib/rpm/redhat/redhat-annobin-cc1 -m64 -march=x86-64-v2 \
        -mtune=generic -fasynchronous-unwind-tables -fstack-clash-protection \
        -fcf-protection -c -o x.o x.c";
    assert_eq!(
        gcc(line),
        Verdict::Compile(Compilation {
            file_inputs: paths(&[
                "/usr/lib/rpm/redhat/redhat-hardened-cc1",
                "/usr/lib/rpm/redhat/redhat-annobin-cc1",
            ]),
            has_debug_info: true,
            ..object(line, "x.c", Language::C, "x.o")
        })
    );
}

// Not one compile.

#[test]
fn links() {
    for line in [
        "a.c -o a",
        "a.o b.o -o prog -lm",
        "",
        "-O2 -g",
        "-shared -fPIC a.c -o a.so",
    ] {
        assert_eq!(gcc(line), local(LocalReason::Link), "{line}");
        assert_eq!(clang(line), local(LocalReason::Link), "{line}");
    }
    // A too-hard flag in a link is counted as a link.
    assert_eq!(gcc("--coverage a.o -o a"), local(LocalReason::Link));
}

#[test]
fn preprocessing() {
    for line in [
        "-E a.c",
        "-E -c a.c",
        "-c -E a.c -o a.i",
        "-M a.c",
        "-MM -c a.c",
        "-M -MF a.d a.c",
        "-MD -E a.c -o a.i",
        // gcc 12 and clang 14 stop after preprocessing even beside -MD.
        "-M -MD -c a.c -o a.o",
        "-MMD -MM -c a.c",
        "--preprocess a.c",
        "-x c++ -E -",
    ] {
        assert_eq!(gcc(line), local(LocalReason::Preprocess), "{line}");
        assert_eq!(clang(line), local(LocalReason::Preprocess), "{line}");
    }
}

#[test]
fn informational() {
    assert_eq!(
        gcc("--version"),
        local(LocalReason::Informational("--version"))
    );
    // gcc 12 and clang 14 print and compile nothing.
    assert_eq!(
        gcc("-c a.c --version"),
        local(LocalReason::Informational("--version"))
    );
    assert_eq!(
        gcc("-c a.c -dumpversion"),
        local(LocalReason::Informational("-dumpversion"))
    );
    assert_eq!(
        clang("-print-resource-dir"),
        local(LocalReason::Informational("-print-"))
    );
    assert_eq!(
        gcc("-### -c a.c"),
        local(LocalReason::Informational("-###"))
    );
    assert_eq!(
        gcc("--help=warnings"),
        local(LocalReason::Informational("--help="))
    );
}

#[test]
fn sources() {
    assert_eq!(
        gcc("-o out.o -c a.c b.c"),
        local(LocalReason::MultipleSources)
    );
    assert_eq!(gcc("-c a.c b.o"), local(LocalReason::MultipleSources));
    assert_eq!(gcc("-c -O2"), local(LocalReason::NoSource));
    assert_eq!(gcc("-x c++ -"), local(LocalReason::Link));
    assert_eq!(gcc("-x c++ -c -"), local(LocalReason::StdinSource));
    assert_eq!(clang("-x c -c - -o x.o"), local(LocalReason::StdinSource));
    assert_eq!(gcc("-c - a.c"), local(LocalReason::MultipleSources));
    // An unknown flag taking a separate argument makes it look like a second source:
    // the compile runs locally, never misread.
    assert_eq!(
        gcc("-frobnicate value -c a.c"),
        local(LocalReason::MultipleSources)
    );
    // gcc skips an assembly source under -S.
    assert_eq!(gcc("-S a.s"), local(LocalReason::NoSource));
    assert_eq!(gcc("-S a.S -o a.s"), local(LocalReason::NoSource));
}

#[test]
fn unknown_languages() {
    let unknown = |s: &str| local(LocalReason::UnknownLanguage(s.into()));
    assert_eq!(gcc("-c a.h"), unknown("h"));
    assert_eq!(gcc("-c a.hpp -o a.gch"), unknown("hpp"));
    assert_eq!(gcc("-c a.o"), unknown("o"));
    assert_eq!(gcc("-c a.f90"), unknown("f90"));
    assert_eq!(gcc("-c Makefile"), unknown(""));
    assert_eq!(gcc("-x c-header -c a.h"), unknown("c-header"));
    assert_eq!(gcc("-xfortran -c a.c"), unknown("fortran"));
    // .CC is C++ to clang only.
    assert_eq!(gcc("-c a.CC"), unknown("CC"));
    assert_eq!(compiled(clang("-c a.CC")).language, Language::Cxx);
    // .sx is assembly to preprocess to gcc only.
    assert_eq!(compiled(gcc("-c a.sx")).language, Language::AsmWithCpp);
    assert_eq!(clang("-c a.sx"), unknown("sx"));
}

#[test]
fn stdout_output() {
    assert_eq!(gcc("-c a.c -o -"), local(LocalReason::StdoutOutput));
    assert_eq!(clang("-S a.c -o -"), local(LocalReason::StdoutOutput));
}

#[test]
fn missing_argument() {
    assert_eq!(gcc("-c a.c -o"), local(LocalReason::MissingArgument("-o")));
    assert_eq!(
        gcc("-c a.c -MF"),
        local(LocalReason::MissingArgument("-MF"))
    );
    assert_eq!(
        clang("-c a.c -Xclang"),
        local(LocalReason::MissingArgument("-Xclang"))
    );
    assert_eq!(gcc("a.c -o"), local(LocalReason::Link));
}

#[test]
fn too_hard() {
    let hard = |flag: &'static str| local(LocalReason::TooHard(flag));
    for (line, flag) in [
        ("-save-temps -c a.c", "-save-temps"),
        ("-save-temps=obj -c a.c", "-save-temps="),
        ("--save-temps -c a.c", "--save-temps"),
        ("--coverage -c a.c", "--coverage"),
        ("-ftest-coverage -c a.c", "-ftest-coverage"),
        ("-fprofile-arcs -c a.c", "-fprofile-arcs"),
        ("-fdump-tree-all -c a.c", "-fdump-"),
        ("-fsyntax-only -c a.c", "-fsyntax-only"),
        ("-fcompare-debug-second -c a.c", "-fcompare-debug"),
        ("-aux-info protos.h -c a.c", "-aux-info"),
        ("-dumpdir obj/ -c a.c", "-dumpdir"),
        ("-fmodules-ts -c a.cc", "-fmodules-ts"),
        ("-gtoggle -c a.c", "-gtoggle"),
        (
            "-fdiagnostics-format=sarif-file -c a.c",
            "-fdiagnostics-format=",
        ),
        ("-wrapper gdb,--args -c a.c", "-wrapper"),
        ("-c a.c -Wa,-adhln=a.lst", "-Wa,"),
        ("-c a.c -Xassembler -al", "-Xassembler"),
        ("-c a.c -Wp,-I,inc", "-Wp,"),
        ("-c a.c -Wp,-include,x.h", "-Wp,"),
        ("-c a.c -Xpreprocessor -H", "-Xpreprocessor"),
        ("-iwithprefix inc -c a.c", "-iwithprefix"),
        // gcc reads an unknown --NAME as -fNAME.
        ("--profile-arcs -c a.c", "-fprofile-arcs"),
        ("--dump-tree-all -c a.c", "-fdump-"),
    ] {
        assert_eq!(gcc(line), hard(flag), "{line}");
    }
    for (line, flag) in [
        ("-save-temps -c a.c", "-save-temps"),
        ("-ftime-trace -c a.c", "-ftime-trace"),
        ("-MJ a.json -c a.c", "-MJ"),
        ("--analyze -c a.c", "--analyze"),
        ("--config my.cfg -c a.c", "--config"),
        ("-ivfsoverlay o.yaml -c a.c", "-ivfsoverlay"),
        ("-I- -c a.c", "-I-"),
        ("-fmodules -c a.m", "-fmodules"),
        ("-Xclang -emit-pch -c a.h", "-Xclang"),
        ("-Xclang -dependency-file -Xclang a.d -c a.c", "-Xclang"),
        ("-g -gsplit-dwarf -S a.c", "-gsplit-dwarf"),
    ] {
        assert_eq!(clang(line), hard(flag), "{line}");
    }
    // Only gcc's driver reads --NAME as -fNAME; clang rejects it, so let it say so.
    assert!(
        compiled(clang("--profile-arcs -c a.c"))
            .file_inputs
            .is_empty()
    );
}

#[test]
fn profiles() {
    // gcc's profiles are named after the object; clang's is one file.
    assert_eq!(
        gcc("-fprofile-use -c a.c"),
        local(LocalReason::TooHard("-fprofile-use"))
    );
    assert_eq!(
        gcc("-fprofile-use=prof -c a.c"),
        local(LocalReason::TooHard("-fprofile-use="))
    );
    assert_eq!(
        gcc("-fprofile-generate -c a.c"),
        local(LocalReason::TooHard("-fprofile-generate"))
    );
    let c = compiled(clang("-fprofile-use=code.profdata -c a.c"));
    assert_eq!(c.file_inputs, paths(&["code.profdata"]));
    let c = compiled(clang("-fprofile-use -c a.c"));
    assert_eq!(c.file_inputs, paths(&["default.profdata"]));
    let c = compiled(clang(
        "-fprofile-instr-use=x.profdata -fprofile-sample-use=s.prof -c a.c",
    ));
    assert_eq!(c.file_inputs, paths(&["x.profdata", "s.prof"]));
    assert!(
        compiled(clang("-fprofile-generate -c a.c"))
            .file_inputs
            .is_empty()
    );
    assert!(
        compiled(clang("-fprofile-instr-generate -c a.c"))
            .file_inputs
            .is_empty()
    );
    let c = compiled(gcc("-fauto-profile -c a.c"));
    assert_eq!(c.file_inputs, paths(&["fbdata.afdo"]));
    let c = compiled(gcc("-fauto-profile=perf.afdo -c a.c"));
    assert_eq!(c.file_inputs, paths(&["perf.afdo"]));
}

#[test]
fn file_inputs() {
    let c = compiled(clang(
        "-fsanitize=address -fsanitize-ignorelist=ign.txt -fsanitize-blacklist=/abs/bl.txt \
         -fsanitize-coverage-allowlist=allow.txt -fmodule-map-file=m.modulemap \
         -include-pch pch.h.pch -fplugin=./plug.so -fplugin=/abs/p.so \
         -Xclang -load -Xclang ./clang-plugin.so -Xclang -add-plugin -Xclang find-bad \
         -fpass-plugin=pass.so -c a.cc",
    ));
    assert_eq!(
        c.file_inputs,
        paths(&[
            "ign.txt",
            "/abs/bl.txt",
            "allow.txt",
            "m.modulemap",
            "pch.h.pch",
            "./plug.so",
            "/abs/p.so",
            "./clang-plugin.so",
        ])
    );
    // Names the toolchain resolves itself are not files of the build.
    let c = compiled(gcc(
        "-fplugin=annobin -specs=nano.specs -specs=./my.specs -c a.c",
    ));
    assert_eq!(c.file_inputs, paths(&["./my.specs"]));
    // dlopen finds a plugin named without a `/` in the loader's directories.
    let c = compiled(gcc("-fplugin=foo.so --specs ./x.specs -c a.c"));
    assert_eq!(c.file_inputs, paths(&["./x.specs"]));
}

// Outputs.

#[test]
fn default_outputs_go_to_the_working_directory() {
    let line = "-c src/a.c";
    assert_eq!(
        gcc(line),
        Verdict::Compile(Compilation {
            explicit_output: false,
            ..object(line, "src/a.c", Language::C, "a.o")
        })
    );
    let line = "-S src/a.c";
    assert_eq!(
        gcc(line),
        Verdict::Compile(Compilation {
            explicit_output: false,
            mode: Mode::Assembly,
            ..object(line, "src/a.c", Language::C, "a.s")
        })
    );
    let output = |v: Verdict| compiled(v).output;
    assert_eq!(output(gcc("-c /abs/dir/a.b.c")), Path::new("a.b.o"));
    assert_eq!(output(gcc("-x c -c src/noext")), Path::new("noext.o"));
    assert_eq!(output(gcc("-c src/x.s")), Path::new("x.o"));
    // -S wins over -c.
    let c = compiled(gcc("-c -S a.cc"));
    assert_eq!((c.mode, c.output), (Mode::Assembly, PathBuf::from("a.s")));
    assert_eq!(output(clang("-emit-llvm -c src/a.c")), Path::new("a.bc"));
    assert_eq!(output(clang("-emit-llvm -S src/a.c")), Path::new("a.ll"));
}

#[test]
fn explicit_outputs() {
    let output = |v: Verdict| compiled(v).output;
    assert_eq!(output(gcc("-c a.c -ofoo.o")), Path::new("foo.o"));
    assert_eq!(output(gcc("-c a.c --output=o/x.o")), Path::new("o/x.o"));
    assert_eq!(output(gcc("-c a.c --output o/y.o")), Path::new("o/y.o"));
    // The last -o wins (gcc 12, clang 14).
    assert_eq!(output(gcc("-c a.c -o one.o -o two.o")), Path::new("two.o"));
    // -o takes the next word whatever it is.
    assert_eq!(gcc("-o -c a.c"), local(LocalReason::Link));
}

#[test]
fn split_dwarf() {
    let extra = |v: Verdict| compiled(v).extra_outputs;
    // Named after the output with .dwo, as gcc 12 and clang 14 do.
    assert_eq!(extra(gcc("-g -gsplit-dwarf -c src/a.c")), paths(&["a.dwo"]));
    assert_eq!(
        extra(gcc("-g -gsplit-dwarf -c src/a.c -o obj/x.o")),
        paths(&["obj/x.dwo"])
    );
    assert_eq!(
        extra(gcc("-g -gsplit-dwarf -c a.c -o obj/xo")),
        paths(&["obj/xo.dwo"])
    );
    assert_eq!(
        extra(gcc("-g -gsplit-dwarf -c a.c -o x.y/xo")),
        paths(&["x.y/xo.dwo"])
    );
    assert_eq!(
        extra(gcc("-g -gsplit-dwarf -c a.c -o o/x.obj.o")),
        paths(&["o/x.obj.dwo"])
    );
    assert_eq!(
        extra(clang("-g -gsplit-dwarf -c a.c -o obj/x.o")),
        paths(&["obj/x.dwo"])
    );
    assert_eq!(
        extra(clang("-gsplit-dwarf=split -g -c a.c")),
        paths(&["a.dwo"])
    );
    // gcc 12 writes one even without -g, clang 14 does not.
    assert_eq!(extra(gcc("-gsplit-dwarf -c a.c -o x.o")), paths(&["x.dwo"]));
    assert_eq!(extra(gcc("-g -gsplit-dwarf -g0 -c a.c")), paths(&["a.dwo"]));
    assert!(extra(clang("-gsplit-dwarf -c a.c -o x.o")).is_empty());
    assert!(extra(clang("-g -gsplit-dwarf -g0 -c a.c")).is_empty());
    assert!(extra(clang("-g -gsplit-dwarf=single -c a.c")).is_empty());
    assert!(extra(gcc("-g -gsplit-dwarf -gno-split-dwarf -c a.c")).is_empty());
    // gcc splits nothing out of assembly.
    assert!(extra(gcc("-g -gsplit-dwarf -S a.c")).is_empty());
    let c = compiled(gcc("-g -gsplit-dwarf -c a.c"));
    assert!(c.has_debug_info);
    assert!(!compiled(gcc("-gsplit-dwarf -c a.c")).has_debug_info);
}

#[test]
fn stack_usage() {
    let extra = |v: Verdict| compiled(v).extra_outputs;
    assert_eq!(extra(gcc("-fstack-usage -c src/a.c")), paths(&["a.su"]));
    assert_eq!(
        extra(gcc("-fstack-usage -c a.c -o obj/x.o")),
        paths(&["obj/x.su"])
    );
    assert_eq!(
        extra(clang("-fstack-usage -S a.c -o obj/x.s")),
        paths(&["obj/x.su"])
    );
    assert_eq!(extra(gcc("--stack-usage -c a.c")), paths(&["a.su"]));
    assert_eq!(
        extra(gcc("-g -gsplit-dwarf -fstack-usage -c a.c -o o/a.o")),
        paths(&["o/a.dwo", "o/a.su"])
    );
}

// Depfiles.

#[test]
fn default_depfile_names() {
    let dep = |v: Verdict| compiled(v).depfile.unwrap().path;
    assert_eq!(dep(gcc("-MD -c src/a.c")), Path::new("a.d"));
    assert_eq!(dep(gcc("-MD -c src/a.c -o obj/a.o")), Path::new("obj/a.d"));
    assert_eq!(
        dep(gcc("-MD -c a.c -o obj/a.obj.o")),
        Path::new("obj/a.obj.d")
    );
    assert_eq!(dep(gcc("-MMD -c a.c -o obj/aout")), Path::new("obj/aout.d"));
    assert_eq!(dep(gcc("-MMD -c a.c -o x.y/out")), Path::new("x.y/out.d"));
    assert_eq!(dep(clang("-MD -S src/a.c")), Path::new("a.d"));
    assert_eq!(dep(clang("-MD -S a.c -o obj/x.s")), Path::new("obj/x.d"));
    assert_eq!(dep(gcc("-MF deps/a.d -MD -c a.c")), Path::new("deps/a.d"));
    assert_eq!(dep(gcc("-MD -MFdeps/a.d -c a.c")), Path::new("deps/a.d"));
}

#[test]
fn depfile_kinds() {
    let kind = |v: Verdict| compiled(v).depfile.unwrap().kind;
    assert_eq!(kind(gcc("-MD -c a.c")), DepKind::AllHeaders);
    assert_eq!(kind(gcc("-MMD -c a.c")), DepKind::UserHeadersOnly);
    // -MMD wins in either order (gcc 12, clang 14).
    for line in ["-MMD -MD -c a.c", "-MD -MMD -c a.c"] {
        assert_eq!(kind(gcc(line)), DepKind::UserHeadersOnly, "{line}");
        assert_eq!(kind(clang(line)), DepKind::UserHeadersOnly, "{line}");
    }
    // Through the preprocessor, gcc's last wins, clang's -MMD.
    let line = "-Wp,-MMD,a.d -Wp,-MD,a.d -c a.c";
    assert_eq!(kind(gcc(line)), DepKind::AllHeaders);
    assert_eq!(kind(clang(line)), DepKind::UserHeadersOnly);
    let line = "-Wp,-MD,a.d -Wp,-MMD,a.d -c a.c";
    assert_eq!(kind(gcc(line)), DepKind::UserHeadersOnly);
    assert_eq!(kind(clang(line)), DepKind::UserHeadersOnly);
    assert_eq!(
        kind(gcc("--write-user-dependencies -c a.c")),
        DepKind::UserHeadersOnly
    );
}

#[test]
fn depfile_details() {
    let c = compiled(gcc("-MD -MT a -MQ $b -MTc -MQd -MP -MG -c a.c"));
    assert_eq!(
        c.depfile,
        Some(DepFile {
            targets: vec![
                DepTarget::Plain("a".into()),
                DepTarget::Quoted("$b".into()),
                DepTarget::Plain("c".into()),
                DepTarget::Quoted("d".into()),
            ],
            phony_targets: true,
            missing_headers_generated: true,
            ..depfile("a.d", DepKind::AllHeaders)
        })
    );
    // -MF, -MT without -MD / -MMD: no depfile (gcc fails, clang warns).
    assert_eq!(compiled(clang("-MF a.d -MT a.o -c a.c")).depfile, None);
}

#[test]
fn no_depfile_without_preprocessing() {
    // gcc 12 and clang 14 write none for these.
    for line in [
        "-MD -c a.s",
        "-MMD -c a.i -o a.o",
        "-Wp,-MD,x.d -c a.ii",
        "-x assembler -MD -c a.S",
    ] {
        assert_eq!(compiled(gcc(line)).depfile, None, "{line}");
    }
    assert!(compiled(gcc("-MD -c a.S")).depfile.is_some());
}

#[test]
fn depfile_through_the_preprocessor() {
    let c = compiled(gcc("-Wp,-MD,dir/.a.o.d,-MP,-MT,a.o -c a.c"));
    assert_eq!(
        c.depfile,
        Some(DepFile {
            targets: vec![DepTarget::Plain("a.o".into())],
            phony_targets: true,
            ..depfile("dir/.a.o.d", DepKind::AllHeaders)
        })
    );
    let c = compiled(gcc("-Xpreprocessor -MMD -Xpreprocessor x.d -c a.c"));
    assert_eq!(c.depfile, Some(depfile("x.d", DepKind::UserHeadersOnly)));
    assert_eq!(
        gcc("-MD -Wp,-MD,x.d -c a.c"),
        local(LocalReason::TooHard("-Wp,"))
    );
    assert_eq!(gcc("-Wp,-MD -c a.c"), local(LocalReason::TooHard("-Wp,")));
    assert_eq!(
        gcc("-MF y.d -Wp,-MD,x.d -c a.c"),
        local(LocalReason::TooHard("-Wp,"))
    );
    assert_eq!(
        gcc("-Xpreprocessor -MD -c a.c"),
        local(LocalReason::TooHard("-Xpreprocessor"))
    );
    // Definitions through the preprocessor are fine (Fedora's -Wp,-D_FORTIFY_SOURCE=2).
    for line in [
        "-Wp,-D_FORTIFY_SOURCE=2,-UNDEBUG -Xpreprocessor -DX -c a.c",
        "-Wp,-DA -Wp,-D,B -c a.c",
    ] {
        assert_eq!(compiled(gcc(line)).depfile, None);
        assert_eq!(compiled(clang(line)).depfile, None);
    }
}

#[test]
fn depfile_through_clangs_driver() {
    // clang's driver turns `-Wp,-MD[,PATH]` into `-MD [-MF PATH]` and gives any other
    // -Wp, word to cc1, which takes none of the dependency options (clang 14).
    let c = compiled(clang("-Wp,-MD,dir/.a.o.d -c a.c -o o/a.o"));
    assert_eq!(c.depfile, Some(depfile("dir/.a.o.d", DepKind::AllHeaders)));
    let c = compiled(clang("-Wp,-MMD -c a.c -o o/a.o"));
    assert_eq!(c.depfile, Some(depfile("o/a.d", DepKind::UserHeadersOnly)));
    let c = compiled(clang("-MD -Wp,-MMD,x.d -c a.c"));
    assert_eq!(c.depfile, Some(depfile("x.d", DepKind::UserHeadersOnly)));
    let c = compiled(clang("-Wp,-MMD,x.d -Wp,-MD,y.d -c a.c"));
    assert_eq!(c.depfile, Some(depfile("y.d", DepKind::UserHeadersOnly)));
    for (line, carrier) in [
        ("-Wp,-MD,x.d,-MP -c a.c", "-Wp,"),
        ("-Wp,-MP,-MD,x.d -c a.c", "-Wp,"),
        ("-Wp,-MT,a.o -MD -c a.c", "-Wp,"),
        (
            "-Xpreprocessor -MMD -Xpreprocessor z.d -c a.c",
            "-Xpreprocessor",
        ),
    ] {
        assert_eq!(clang(line), local(LocalReason::TooHard(carrier)), "{line}");
    }
}

// Languages.

#[test]
fn languages_from_extensions() {
    let lang = |v: Verdict| compiled(v).language;
    for (file, language) in [
        ("a.c", Language::C),
        ("a.cc", Language::Cxx),
        ("a.cp", Language::Cxx),
        ("a.cpp", Language::Cxx),
        ("a.CPP", Language::Cxx),
        ("a.cxx", Language::Cxx),
        ("a.c++", Language::Cxx),
        ("a.C", Language::Cxx),
        ("a.i", Language::PreprocessedC),
        ("a.ii", Language::PreprocessedCxx),
        ("a.m", Language::ObjC),
        ("a.mm", Language::ObjCxx),
        ("a.M", Language::ObjCxx),
        ("a.mi", Language::PreprocessedObjC),
        ("a.mii", Language::PreprocessedObjCxx),
        ("a.s", Language::Asm),
        ("a.S", Language::AsmWithCpp),
    ] {
        assert_eq!(lang(gcc(&format!("-c {file}"))), language, "{file}");
        assert_eq!(lang(clang(&format!("-c {file}"))), language, "{file}");
    }
}

#[test]
fn cxx_driver_compiles_c_as_cxx() {
    let cxx = |line: &str| {
        compiled(parse(
            &words(line),
            Path::new("/"),
            Driver::cxx(Family::Gcc),
        ))
    };
    assert_eq!(cxx("-c a.c").language, Language::Cxx);
    assert_eq!(cxx("-c a.i").language, Language::PreprocessedCxx);
    assert_eq!(cxx("-c a.m").language, Language::ObjC);
    assert_eq!(cxx("-x c -c a.c").language, Language::C);
}

#[test]
fn x_applies_to_the_sources_after_it() {
    let lang = |v: Verdict| compiled(v).language;
    assert_eq!(lang(gcc("-x c++ -c a.c")), Language::Cxx);
    assert_eq!(lang(gcc("-xc++ -c a.c")), Language::Cxx);
    assert_eq!(lang(gcc("--language=c++ -c a.c")), Language::Cxx);
    assert_eq!(lang(gcc("-c a.c -x c++")), Language::C);
    assert_eq!(lang(gcc("-x c++ -x none -c a.c")), Language::C);
    assert_eq!(
        lang(gcc("-x assembler-with-cpp -c a.asm")),
        Language::AsmWithCpp
    );
    assert_eq!(lang(gcc("-x cpp-output -c a.c")), Language::PreprocessedC);
    assert_eq!(lang(clang("-x objective-c++ -c a.c")), Language::ObjCxx);
    let names: Vec<_> = LANGUAGE_NAMES.iter().map(|(n, _)| *n).collect();
    assert!(names.is_sorted(), "{names:?}");
    for (name, language) in LANGUAGE_NAMES {
        assert_eq!(
            Language::from_gcc_name(language.gcc_name().as_bytes()),
            Some(*language)
        );
        assert_eq!(lang(gcc(&format!("-x {name} -c f"))), *language);
    }
}

#[test]
fn extension_tables_are_sorted() {
    for table in [EXTENSIONS, GCC_EXTENSIONS, CLANG_EXTENSIONS] {
        for pair in table.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "{:?} before {:?}",
                pair[0].0,
                pair[1].0
            );
        }
    }
}

// Include search.

#[test]
fn joined_and_separate_forms() {
    let line = "-Ia -I b -iquote q1 -iquoteq2 -isystem s1 -isystems2 -idirafter a1 \
        -idiraftera2 -include f1.h -includef2.h -imacros m1.h -imacrosm2.h -F fw \
        -iframework sfw --include-directory=c --include-directory d \
        --include-directory-after=a3 --include=f3.h --sysroot /sr -isysroot /isr \
        -MFd.d -MD -MTt -MQ q -DX -D Y -UZ -U W -xc -o out.o -c src";
    assert_eq!(
        gcc(line),
        Verdict::Compile(Compilation {
            depfile: Some(DepFile {
                targets: vec![DepTarget::Plain("t".into()), DepTarget::Quoted("q".into())],
                ..depfile("d.d", DepKind::AllHeaders)
            }),
            includes: IncludeSearch {
                quote: paths(&["q1", "q2"]),
                bracket: paths(&["a", "b", "c", "d"]),
                system: paths(&["s1", "s2"]),
                after: paths(&["a1", "a2", "a3"]),
                framework: paths(&["fw"]),
                system_framework: paths(&["sfw"]),
                sysroot: Some("/sr".into()),
                isysroot: Some("/isr".into()),
                ..IncludeSearch::default()
            },
            // -imacros before -include, as gcc reads them.
            forced_includes: paths(&["m1.h", "m2.h", "f1.h", "f2.h", "f3.h"]),
            ..object(line, "src", Language::C, "out.o")
        })
    );
}

#[test]
fn sysroots() {
    let includes = |v: Verdict| compiled(v).includes;
    let i = includes(gcc("--sysroot=/a -c x.c"));
    assert_eq!(i.header_sysroot(), Some(Path::new("/a")));
    let i = includes(clang("-isysroot /b --sysroot=/a -c x.c"));
    assert_eq!(
        (i.sysroot.as_deref(), i.header_sysroot()),
        (Some(Path::new("/a")), Some(Path::new("/b")))
    );
    assert_eq!(includes(gcc("-c x.c")).header_sysroot(), None);
}

#[test]
fn include_barrier() {
    // gcc 12: the -I directories before -I- are for "..." only, ahead of every -iquote
    // directory, and the including file's directory is not searched.
    let i = compiled(gcc("-iquote q0 -I a -I- -I b -iquote q1 -c x.c")).includes;
    assert_eq!(i.quote, paths(&["a", "q0", "q1"]));
    assert_eq!(i.bracket, paths(&["b"]));
    assert!(i.no_source_dir);
    assert!(!compiled(gcc("-I a -c x.c")).includes.no_source_dir);
    assert_eq!(clang("-I a -I- -c x.c"), local(LocalReason::TooHard("-I-")));
}

#[test]
fn include_prefixes() {
    // As `gcc -v` / `clang -v` list them: gcc searches -iwithprefix directories with
    // the -isystem ones, clang after the standard ones.
    let line = "-isystem s1 -iprefix /opt/p/ -iwithprefix inc -iwithprefixbefore b \
        -isystem s2 -iprefix /q/ -iwithprefixx -idirafter d -c x.c";
    let i = compiled(gcc(line)).includes;
    assert_eq!(i.system, paths(&["s1", "/opt/p/inc", "s2", "/q/x"]));
    assert_eq!(i.bracket, paths(&["/opt/p/b"]));
    assert_eq!(i.after, paths(&["d"]));
    let i = compiled(clang(line)).includes;
    assert_eq!(i.system, paths(&["s1", "s2"]));
    assert_eq!(i.bracket, paths(&["/opt/p/b"]));
    assert_eq!(i.after, paths(&["/opt/p/inc", "/q/x", "d"]));
}

#[test]
fn no_standard_includes() {
    let i = compiled(clang(
        "-nostdinc -nostdinc++ -nostdlibinc -nobuiltininc -c x.c",
    ))
    .includes;
    assert!(i.nostdinc && i.nostdinc_cxx && i.nostdlibinc && i.nobuiltininc);
    let i = compiled(gcc("--no-standard-includes -c x.c")).includes;
    assert!(i.nostdinc && !i.nostdinc_cxx);
    let i = compiled(clang("-cxx-isystem cx -isystem-after sa -c x.cc")).includes;
    assert_eq!((i.system, i.after), (paths(&["cx"]), paths(&["sa"])));
}

#[test]
fn tool_prefixes() {
    let c = compiled(gcc("-B/opt/bin/ -Bother --prefix=third -c x.c"));
    assert_eq!(c.tool_prefixes, paths(&["/opt/bin/", "other", "third"]));
}

// Other facts.

#[test]
fn native_cpu() {
    let native = |v: Verdict| compiled(v).native_cpu;
    assert!(native(gcc("-march=native -c a.c")));
    assert!(native(gcc("-mtune=native -c a.c")));
    assert!(native(clang("-mcpu=native -c a.c")));
    assert!(!native(gcc("-march=x86-64-v3 -mtune=generic -c a.c")));
}

#[test]
fn color() {
    let color = |v: Verdict| compiled(v).color_diagnostics;
    assert_eq!(color(gcc("-c a.c")), None);
    assert_eq!(color(gcc("-fdiagnostics-color=always -c a.c")), Some(true));
    assert_eq!(color(gcc("-fdiagnostics-color -c a.c")), Some(true));
    assert_eq!(color(gcc("-fdiagnostics-color=never -c a.c")), Some(false));
    assert_eq!(color(gcc("-fno-diagnostics-color -c a.c")), Some(false));
    assert_eq!(
        color(gcc("-fdiagnostics-color -fdiagnostics-color=auto -c a.c")),
        None
    );
    assert_eq!(color(clang("-fcolor-diagnostics -c a.c")), Some(true));
    assert_eq!(
        color(clang("-fcolor-diagnostics -fno-color-diagnostics -c a.c")),
        Some(false)
    );
}

#[test]
fn debug_info() {
    let debug = |v: Verdict| compiled(v).has_debug_info;
    for line in [
        "-g",
        "-g3",
        "-ggdb",
        "-ggdb3",
        "-gdwarf-4",
        "-g0 -g",
        "--debug",
        "-gline-tables-only",
    ] {
        assert!(debug(gcc(&format!("{line} -c a.c"))), "{line}");
    }
    for line in [
        "",
        "-g0",
        "-g -g0",
        "-ggdb -ggdb0",
        "-gz",
        "-gz=zlib",
        "-gsplit-dwarf",
        "-gno-record-gcc-switches",
        "-gcolumn-info",
    ] {
        assert!(!debug(gcc(&format!("{line} -c a.c"))), "{line}");
    }
}

#[test]
fn unknown_flags_pass_through() {
    let line = "-fno-foo -mbar -Wfoo=3 -fsanitize=address -mllvm -inline-threshold=100 \
        -target x86_64-linux-gnu --target=aarch64 -Xclang -fcolor-diagnostics \
        -Xclang -mllvm -Xclang -x -c a.c";
    assert_eq!(
        clang(line),
        Verdict::Compile(Compilation {
            explicit_output: false,
            ..object(line, "a.c", Language::C, "a.o")
        })
    );
    // Arguments kept exactly, in order.
    let line = "-O2 -c -Wl,-z,now a.c -o a.o -I x -DX=\"a\" -fno-common";
    assert_eq!(compiled(gcc(line)).args, words(line));
}

#[test]
fn response_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("args.rsp"),
        "-c \"src/sp ace.c\" -o 'out dir/x.o' -DX=a\\\\b\n-I inc @more",
    )
    .unwrap();
    std::fs::write(dir.path().join("more"), "-DMORE").unwrap();
    let args = words("-O2 @args.rsp -g");
    let c = compiled(parse(&args, dir.path(), Family::Gcc));
    let expected: Vec<OsString> = [
        "-O2",
        "-c",
        "src/sp ace.c",
        "-o",
        "out dir/x.o",
        "-DX=a\\b",
        "-I",
        "inc",
        "-DMORE",
        "-g",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    assert_eq!(c.args, expected);
    assert_eq!(
        (c.source.as_path(), c.output.as_path()),
        (Path::new("src/sp ace.c"), Path::new("out dir/x.o"))
    );
    assert_eq!(c.includes.bracket, paths(&["inc"]));
    assert!(c.has_debug_info);
    // Expansion comes first, so an @file is expanded even as -o's value.
    std::fs::write(dir.path().join("out"), "o.o").unwrap();
    let c = compiled(parse(&words("-c a.c -o @out"), dir.path(), Family::Clang));
    assert_eq!(c.output, Path::new("o.o"));
    assert_eq!(
        parse(&words("-c a.c @missing.rsp"), dir.path(), Family::Gcc),
        local(LocalReason::ResponseFileUnreadable("missing.rsp".into()))
    );
}

#[test]
fn reasons_have_distinct_names_and_text() {
    let reasons = [
        LocalReason::Link,
        LocalReason::Preprocess,
        LocalReason::Informational("--version"),
        LocalReason::TooHard("-save-temps"),
        LocalReason::MissingArgument("-o"),
        LocalReason::NoSource,
        LocalReason::MultipleSources,
        LocalReason::StdinSource,
        LocalReason::UnknownLanguage("f90".into()),
        LocalReason::StdoutOutput,
        LocalReason::ResponseFileUnreadable("a.rsp".into()),
        LocalReason::ResponseFileTooDeep("a.rsp".into()),
    ];
    let names: std::collections::HashSet<String> = reasons.iter().map(LocalReason::name).collect();
    assert_eq!(names.len(), reasons.len());
    assert_eq!(
        LocalReason::TooHard("-save-temps").name(),
        "too-hard:-save-temps"
    );
    assert_eq!(LocalReason::Link.name(), "link");
    for reason in &reasons {
        assert!(!reason.to_string().is_empty());
    }
    assert_eq!(
        LocalReason::TooHard("-save-temps").to_string(),
        "-save-temps is not supported by the cache"
    );
    assert_eq!(
        LocalReason::UnknownLanguage(String::new()).to_string(),
        "the source has no extension and no -x names its language"
    );
}

#[test]
fn an_empty_depfile_name_runs_the_compiler() {
    let args = |extra: &[&str]| {
        let mut a = words("-c a.c -MD");
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let verdict = |extra: &[&str]| parse(&args(extra), Path::new("/src"), Family::Gcc);
    assert_eq!(
        verdict(&["-MF", ""]),
        local(LocalReason::EmptyOutput("-MF"))
    );
    assert_eq!(
        LocalReason::EmptyOutput("-MF").to_string(),
        "the file name given with -MF is empty"
    );
}
