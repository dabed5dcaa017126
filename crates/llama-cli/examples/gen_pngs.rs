//! Writes N varied PNG images into a directory: `cargo run --example gen_pngs -- DIR N`.
//! The benchmark in `bench/xargs.sh` uses it; the tests use the same generator.

#[path = "../../llama-testkit/src/pngs.rs"]
mod pngs;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: gen_pngs DIR COUNT";
    let dir = args.next().ok_or(usage)?;
    let count: usize = args
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("COUNT: {e}"))?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir}: {e}"))?;
    let names = pngs::make_pngs(std::path::Path::new(&dir), count);
    println!("wrote {} images to {dir}", names.len());
    Ok(())
}
