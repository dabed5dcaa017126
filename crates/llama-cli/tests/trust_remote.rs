//! The S3 CAS against a real S3 server (s3s-fs) whose objects a test corrupts, as anyone who
//! may write the bucket could: a corrupt blob is a miss that the next upload repairs, and a
//! download never takes more bytes than the digest announces.

use std::fs;

use llama_core::{BlobSource, Digest, Store};
use llama_exec::{ObjectStoreUrl, S3Cas, S3Error, S3Options};

use llama_testkit::harness::S3Server;

fn s3_client(s3: &S3Server) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    };
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(s3.endpoint())
            .region(Region::new(s3.region()))
            .credentials_provider(Credentials::new(
                s3.access_key(),
                s3.secret_key(),
                None,
                None,
                "test",
            ))
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build(),
    )
}

async fn cas(s3: &S3Server, url: &ObjectStoreUrl, present: &std::path::Path) -> S3Cas {
    let options = S3Options {
        present_file: Some(present.to_path_buf()),
        ..S3Options::default()
    };
    S3Cas::with_client(s3_client(s3), url.clone(), options).await
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
