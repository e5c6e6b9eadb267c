//! The configuration document read from S3 at cold start, on moto.

use s3_export::moto::MotoServer;
use shared::load::config_from;

async fn moto_with_document(body: &str) -> (MotoServer, aws_sdk_s3::Client) {
    let moto = MotoServer::start().await.unwrap();
    let s3 = moto.s3_client().await;
    s3.create_bucket().bucket("exports").send().await.unwrap();
    s3.put_object()
        .bucket("exports")
        .key("config/export.json")
        .body(body.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    (moto, s3)
}

fn vars(export_config: &'static str) -> impl Fn(&str) -> Option<String> {
    move |name| match name {
        "EXPORT_CONFIG" => Some(export_config.to_owned()),
        "EXPORT_BUCKET" => Some("exports".to_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn document_is_read_from_an_s3_uri() {
    let (_moto, s3) = moto_with_document(
        r#"{"defaultStream":"orders","streams":{"orders":{"profile":"generic","tenant":"/account","time":"/ts"}}}"#,
    )
    .await;
    let config = config_from(vars("s3://exports/config/export.json"), &s3)
        .await
        .unwrap();
    assert_eq!(config.default_stream, "orders");
    assert!(config.streams.contains_key("orders"));
}

#[tokio::test]
async fn missing_document_names_the_variable_and_the_uri() {
    let (_moto, s3) = moto_with_document("{}").await;
    let error = config_from(vars("s3://exports/config/missing.json"), &s3)
        .await
        .unwrap_err();
    assert_eq!(error.field, "EXPORT_CONFIG");
    assert!(
        error.message.contains("s3://exports/config/missing.json"),
        "{error}"
    );
    assert!(error.message.contains("NoSuchKey"), "{error}");
}

#[tokio::test]
async fn invalid_document_in_s3_names_the_bad_field() {
    let (_moto, s3) = moto_with_document(r#"{"partitionBy":"weekly"}"#).await;
    let error = config_from(vars("s3://exports/config/export.json"), &s3)
        .await
        .unwrap_err();
    assert_eq!(error.field, "partitionBy");
}

#[tokio::test]
async fn malformed_uri_is_refused() {
    let (_moto, s3) = moto_with_document("{}").await;
    let error = config_from(vars("s3://exports"), &s3).await.unwrap_err();
    assert_eq!(error.field, "EXPORT_CONFIG");
}

#[tokio::test]
async fn inline_document_needs_no_s3() {
    let (_moto, s3) = moto_with_document("{}").await;
    let config = config_from(vars(r#"{"putConcurrency": 4}"#), &s3)
        .await
        .unwrap();
    assert_eq!(config.put_concurrency, 4);
}
