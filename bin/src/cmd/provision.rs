//! `docstore provision`.

use docstore::Error;

use super::Ctx;

/// Creates the remote resources the configuration names (the DynamoDB table).
pub(crate) async fn run(ctx: &Ctx) -> Result<(), Error> {
    let config = &ctx.config;
    let mut created = Vec::new();
    if let Some(table) = config.metadata.strip_prefix("dynamodb://") {
        let client = docstore::aws::AwsSettings::from_env().dynamodb_client();
        docstore::meta::dynamodb::DynamoMetadata::create_table(&client, table).await?;
        created.push(format!("dynamodb table {table}"));
    }
    crate::emit(ctx.json, &created, |c| {
        if c.is_empty() {
            say!("nothing to provision (S3 buckets and KMS keys are created by your infrastructure code)");
        }
        for item in c {
            say!("created {item}");
        }
    });
    Ok(())
}
