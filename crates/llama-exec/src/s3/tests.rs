//! Unit tests of the S3 CAS's URL parsing, known-present set and hints.

use super::present::{KNOWN_PRESENT_SINCE, KnownPresent, is_fresh, parse_hex_line};
use super::*;

#[test]
fn urls_parse_and_name_keys() {
    let u: ObjectStoreUrl = "s3://my-bucket/llama/".parse().unwrap();
    assert_eq!(u.bucket, "my-bucket");
    assert_eq!(u.prefix, "llama");
    let d = Digest::of_bytes(b"x");
    assert_eq!(u.cas_key(&d), format!("llama/cas/{}", d.hex()));
    assert_eq!(u.ac_key(&d), format!("llama/ac/{}", d.hex()));
    assert_eq!(u.to_string(), "s3://my-bucket/llama");
    let bare: ObjectStoreUrl = "s3://my-bucket".parse().unwrap();
    assert_eq!(bare.cas_key(&d), format!("cas/{}", d.hex()));
    assert_eq!(bare.to_string(), "s3://my-bucket");
    for bad in [
        "my-bucket",
        "s3://",
        "s3://B",
        "s3://ab",
        "s3://b_c/x",
        "s3://abc/../x",
    ] {
        let err = bad.parse::<ObjectStoreUrl>().unwrap_err().to_string();
        assert!(err.contains("LLAMA_OBJECT_STORE"), "{bad}: {err}");
    }
}

#[test]
fn hex_lines_parse_and_junk_is_skipped() {
    let d = Digest::of_bytes(b"x");
    assert_eq!(parse_hex_line(&d.hex()), Some(*d.hash_bytes()));
    assert_eq!(parse_hex_line("zz"), None);
    assert_eq!(parse_hex_line(&"g".repeat(64)), None);
}

#[tokio::test]
async fn known_present_set_persists_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("present/abc");
    let a = Digest::of_bytes(b"a");
    let b = Digest::of_bytes(b"b");
    let first = KnownPresent::load(Some(path.clone())).await;
    first.insert(&a);
    first.insert(&a);
    let second = KnownPresent::load(Some(path.clone())).await;
    assert!(second.contains(&a));
    assert!(!second.contains(&b));
    second.insert(&b);
    second.forget(&a);
    assert!(!second.contains(&a));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3, "a header and two blobs: {text}");
    assert!(text.starts_with(KNOWN_PRESENT_SINCE), "{text}");
}

#[tokio::test]
async fn known_present_set_starts_afresh_when_old_or_headerless() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("present");
    let a = Digest::of_bytes(b"a");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let eight_days_ago = now - 8 * 24 * 3600;
    for stale in [
        format!("{KNOWN_PRESENT_SINCE}{eight_days_ago}\n{}\n", a.hex()),
        format!("{}\n", a.hex()),
    ] {
        std::fs::write(&path, stale).unwrap();
        let loaded = KnownPresent::load(Some(path.clone())).await;
        assert!(!loaded.contains(&a));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(is_fresh(&text, now), "{text}");
    }
    let one_day_ago = now - 24 * 3600;
    std::fs::write(
        &path,
        format!("{KNOWN_PRESENT_SINCE}{one_day_ago}\n{}\n", a.hex()),
    )
    .unwrap();
    assert!(KnownPresent::load(Some(path.clone())).await.contains(&a));
}

#[test]
fn hints_say_what_to_do() {
    assert!(hint("x", Some(403)).contains("s3:PutObject"));
    assert!(hint("NoSuchBucket: gone", Some(404)).contains("llama bootstrap"));
    assert!(hint("dispatch failure: io error", None).contains("AWS_ENDPOINT_URL_S3"));
    assert_eq!(hint("something else", Some(400)), "");
}
