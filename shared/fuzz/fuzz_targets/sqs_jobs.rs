//! The sync worker's input: an SQS event, and each message body read as a job (the same
//! `Job::parse` the Lambda handler and both queue adapters use).
#![no_main]

use aws_lambda_events::event::sqs::SqsEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = shared::Job::parse(text);
    }
    if let Ok(event) = serde_json::from_slice::<SqsEvent>(data) {
        for message in event.records {
            if let Some(body) = message.body.as_deref() {
                let _ = shared::Job::parse(body);
            }
        }
    }
});
