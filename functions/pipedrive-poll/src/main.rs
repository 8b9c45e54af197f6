//! `pipedrive-poll`: the EventBridge schedule; polls every CRM (Pipedrive and HubSpot) of every
//! tenant and enqueues what changed.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn, tracing};
use shared::deploy::Deployment;
use shared::lambda::PollReport;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let deployment = Deployment::from_env().await?.with_event_bus().await;
    let d = &deployment;
    run(service_fn(
        move |event: LambdaEvent<EventBridgeEvent>| async move {
            Ok::<PollReport, Error>(
                shared::lambda::handle_schedule(
                    &d.service,
                    d.queue.as_ref(),
                    event.payload,
                    Some(shared::lambda::job_deadline(event.context.deadline)),
                )
                .await,
            )
        },
    ))
    .await
}
