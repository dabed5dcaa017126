//! The S3 CAS against a real S3 server (s3s-fs, started by llama-testkit): it verifies and
//! uploads each blob once, and with objects a test corrupts, as anyone who may write the
//! bucket could, a corrupt blob is a miss that the next upload repairs, and a download never
//! takes more bytes than the digest announces.

use std::fs;

use llama_core::{BlobSource, Digest, Store, reapi};
use llama_exec::{ObjectStoreUrl, S3Cas, S3Error, S3Options};

use llama_testkit::harness::S3Server;
use llama_testkit::letters;

async fn cas(s3: &S3Server, url: &ObjectStoreUrl, present: &std::path::Path) -> S3Cas {
    let options = S3Options {
        present_file: Some(present.to_path_buf()),
        ..S3Options::default()
    };
    S3Cas::with_client(s3.sdk_client(s3.secret_key()), url.clone(), options).await
}

// See: issue 12, defect 8
#[test]
fn r12_a_corrupt_cas_object_is_repaired_by_the_next_upload() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url: ObjectStoreUrl = format!("s3://{}/trust", s3.bucket()).parse().unwrap();
    let present = dir.path().join("present");
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    runtime.block_on(async {
        // This machine has the blob and uploads it once; it is then known present.
        let local = Store::open(dir.path().join("local"), 1 << 30).unwrap();
        let data = b"int main(void) { return 0; }\n".to_vec();
        let digest = local.put_bytes(&data).unwrap();
        let client = cas(&s3, &url, &present).await;
        assert!(
            client
                .upload(digest, BlobSource::File(local.blob_path(&digest)))
                .await
                .unwrap()
        );
        // Someone with write access to the bucket damages the object.
        let object = s3.root().join(s3.bucket()).join(url.cas_key(&digest));
        fs::write(&object, b"int main(void) { return 1; }\n").unwrap();

        // A reader finds it corrupt: a miss, not kept.
        let fresh = Store::open(dir.path().join("fresh"), 1 << 30).unwrap();
        let err = client.download_to_store(&digest, &fresh).await.unwrap_err();
        assert!(err.is_miss(), "a corrupt object must be a miss: {err}");
        assert!(matches!(err, S3Error::Corrupt { .. }), "{err}");
        assert!(!fresh.contains(&digest));

        // The next upload from the local copy replaces it, though HEAD says it is there.
        let puts = s3.put_count(&url.cas_key(&digest));
        let uploaded = client
            .upload(digest, BlobSource::File(local.blob_path(&digest)))
            .await
            .unwrap();
        assert!(
            uploaded && s3.put_count(&url.cas_key(&digest)) == puts + 1,
            "the corrupt object was not uploaded again (uploaded: {uploaded}); s3s-fs log:\n{}",
            s3.log()
        );
        assert_eq!(fs::read(&object).unwrap(), data);
        // Repaired for everyone: a reader in another process gets the verified blob.
        client.download_to_store(&digest, &fresh).await.unwrap();
        assert_eq!(fresh.get_bytes(&digest).unwrap(), data);
        let other = cas(&s3, &url, &present).await;
        let third = Store::open(dir.path().join("third"), 1 << 30).unwrap();
        other.download_to_store(&digest, &third).await.unwrap();
        // And once repaired, it is known present again: no further PUT.
        assert!(
            !client
                .upload(digest, BlobSource::File(local.blob_path(&digest)))
                .await
                .unwrap()
        );
    });
}

// See: issue 12, defect 4
#[test]
fn r12_an_s3_object_longer_than_its_digest_is_cut_off() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url: ObjectStoreUrl = format!("s3://{}/trust", s3.bucket()).parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    runtime.block_on(async {
        let client = cas(&s3, &url, &dir.path().join("present")).await;
        // A 10-byte blob whose object holds 32 MiB: the download stops past 10 bytes.
        let digest = Digest::of_bytes(b"ten bytes!");
        let object = s3.root().join(s3.bucket()).join(url.cas_key(&digest));
        fs::create_dir_all(object.parent().unwrap()).unwrap();
        fs::write(&object, vec![b'x'; 32 << 20]).unwrap();
        let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
        let err = client.download_to_store(&digest, &store).await.unwrap_err();
        assert!(err.is_miss(), "{err}");
        let down = client.counts().bytes_down;
        assert!(
            down < 4 << 20,
            "took {down} bytes of a 32 MiB object for a 10-byte blob: {err}"
        );
        assert!(!store.contains(&digest));
    });
}

#[test]
fn the_s3_cas_verifies_and_uploads_each_blob_once() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url: ObjectStoreUrl = format!("s3://{}/cas-test", s3.bucket()).parse().unwrap();
    let options = S3Options {
        present_file: Some(dir.path().join("present")),
        ..S3Options::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    runtime.block_on(async {
        let cas =
            S3Cas::with_client(s3.sdk_client(s3.secret_key()), url.clone(), options.clone()).await;
        let small = b"small blob".to_vec();
        let small_d = Digest::of_bytes(&small);
        let big = letters(17 << 20);
        let big_d = Digest::of_bytes(&big);
        let big_path = dir.path().join("big");
        fs::write(&big_path, &big).unwrap();
        let empty = Digest::of_bytes(b"");

        let mut missing = cas
            .find_missing(&[small_d, big_d, empty, small_d])
            .await
            .unwrap();
        missing.sort_by_key(|d| d.size());
        assert_eq!(missing, vec![small_d, big_d]);
        assert!(
            cas.upload(small_d, BlobSource::Bytes(small.clone().into()))
                .await
                .unwrap()
        );
        assert!(
            !cas.upload(small_d, BlobSource::Bytes(small.clone().into()))
                .await
                .unwrap()
        );
        assert!(
            cas.upload(big_d, BlobSource::File(big_path.clone()))
                .await
                .unwrap()
        );
        assert_eq!(s3.count("UploadPart", "cas-test/cas/"), 2, "{}", s3.log());
        assert_eq!(s3.put_count("cas-test/cas/"), 2);
        let heads = s3.count("HeadObject", "");
        assert!(
            cas.find_missing(&[small_d, big_d])
                .await
                .unwrap()
                .is_empty()
        );
        // Another process sharing the known-present file asks nothing either.
        let other =
            S3Cas::with_client(s3.sdk_client(s3.secret_key()), url.clone(), options.clone()).await;
        assert!(
            other
                .find_missing(&[small_d, big_d])
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(s3.count("HeadObject", ""), heads);
        let counts = cas.counts();
        assert!(counts.bytes_up >= big.len() as u64, "{counts:?}");
        // HEADs: two to find them missing, one before each upload; PUTs: one, then three for
        // the multipart upload (create, two parts, complete makes four).
        assert_eq!((counts.heads, counts.puts), (4, 5), "{counts:?}");

        // A file that changed since it was hashed is never uploaded under the old digest.
        let changed = dir.path().join("changed");
        fs::write(&changed, b"now").unwrap();
        let err = cas
            .upload(Digest::of_bytes(b"then"), BlobSource::File(changed.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, S3Error::Changed { .. }), "{err}");

        // Downloads land in the store, verified; a tampered object is refused by name.
        let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
        cas.download_to_store(&big_d, &store).await.unwrap();
        assert!(store.get_bytes(&big_d).unwrap() == big);
        let object = s3.root().join(s3.bucket()).join(url.cas_key(&small_d));
        fs::write(&object, b"tampered").unwrap();
        let err = cas.download_to_store(&small_d, &store).await.unwrap_err();
        assert!(matches!(err, S3Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&url.cas_key(&small_d)), "{err}");
        assert!(!store.contains(&small_d));
        let gone = Digest::of_bytes(b"never uploaded");
        let err = cas.download_to_store(&gone, &store).await.unwrap_err();
        assert!(matches!(err, S3Error::NotFound { .. }), "{err}");

        // The action cache.
        let action = Digest::of_bytes(b"an action");
        assert_eq!(cas.get_action_result(&action).await.unwrap(), None);
        let result = reapi::ActionResult {
            exit_code: 0,
            stdout_digest: Some(small_d.to_proto()),
            ..Default::default()
        };
        cas.put_action_result(&action, &result).await.unwrap();
        assert_eq!(cas.get_action_result(&action).await.unwrap(), Some(result));

        // A wrong secret: the error names the bucket and key and says what to check.
        let wrong =
            S3Cas::with_client(s3.sdk_client("wrong"), url.clone(), S3Options::default()).await;
        let err = wrong.find_missing(&[gone]).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("s3://{}/cas-test/cas/", s3.bucket()))
                && err.contains("check that the credentials"),
            "{err}"
        );
    });
}
