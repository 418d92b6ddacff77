#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    custom_resource::serve(ad_service_account::AdServiceAccount::from_env()).await
}
