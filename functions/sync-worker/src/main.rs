//! `sync-worker`: SQS batch → per-contact sync, reporting partial batch failures.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, run, service_fn, tracing};
use shared::deploy::Deployment;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let deployment = Deployment::from_env().await?.with_event_bus().await;
    let d = &deployment;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, Error>(
            shared::lambda::handle_sqs_batch(
                &d.service,
                d.queue.as_ref(),
                event.payload,
                Some(shared::lambda::job_deadline(event.context.deadline)),
            )
            .await,
        )
    }))
    .await
}
