//! AWS adapters: DynamoDB for the stores, SQS for the job queue, Secrets Manager for tenants'
//! credentials, EventBridge for sync outcomes.

pub mod dynamo;
pub mod events;
pub mod secrets;
pub mod sqs;

/// Renders an SDK error with its full context (service code and message).
pub(crate) fn sdk_message<E: std::error::Error>(e: &E) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()
}
