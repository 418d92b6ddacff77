#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    custom_resource::serve(share_acl::ShareAcl::from_env()).await
}
