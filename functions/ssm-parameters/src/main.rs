#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    custom_resource::serve(ssm_parameters::SsmParameters::from_env()).await
}
