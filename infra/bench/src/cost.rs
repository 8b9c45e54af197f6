//! The cost model: AWS dollars per 1,000,000 contact changes, from what one change was measured
//! to cost in requests and time (the `aws` part) and list prices.
//!
//! Prices: us-east-1 list prices as AWS publishes them (DynamoDB on-demand after its
//! November 2024 reduction), as of 2026-12-07; not fetched at run time. Lambda x86 at the
//! template's 256 MB. A sync's time in Lambda is the worker's measured time on moto plus an
//! assumed 150 ms per CRM request (the real APIs are a round trip away; the simulators answer
//! in process); each webhook or API request is an invocation of about 10 ms.

use std::fmt;

/// $ per DynamoDB on-demand write request unit, read request unit.
const WRU: f64 = 0.625e-6;
const RRU: f64 = 0.125e-6;
/// $ per SQS standard request (64 KB chunk).
const SQS: f64 = 0.40e-6;
/// $ per Lambda request, per GB-second (x86).
const LAMBDA_REQUEST: f64 = 0.20e-6;
const LAMBDA_GB_S: f64 = 0.000_016_666_7;
/// $ per API Gateway HTTP API request (first 300 million a month).
const HTTP_API: f64 = 1.00e-6;
/// The functions' memory (template.yaml), in GB.
const MEMORY_GB: f64 = 0.25;
/// Assumed time of one CRM request from Lambda, and of one webhook/API invocation.
const CRM_REQUEST_MS: f64 = 150.0;
const HTTP_INVOCATION_MS: f64 = 10.0;

/// What one change cost, measured.
pub struct Counts {
    /// DynamoDB write and read request units.
    pub wru: f64,
    pub rru: f64,
    /// SQS requests.
    pub sqs: f64,
    /// Lambda invocations: worker batches, webhook and API requests.
    pub invocations: f64,
    /// Requests through API Gateway: our API's (the webhooks come in through `webhook-ingest`'s
    /// function URL, which has no per-request charge).
    pub http_requests: f64,
    /// The worker's time (ms) and the CRM requests it made.
    pub worker_ms: f64,
    pub crm_requests: f64,
}

/// $ per 1,000,000 changes, by service.
pub struct Cost {
    dynamodb: f64,
    sqs: f64,
    lambda: f64,
    gb_s: f64,
    api_gateway: f64,
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.dynamodb + self.sqs + self.lambda + self.api_gateway
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "${:.2} per 1,000,000 changes: DynamoDB ${:.2}, SQS ${:.2}, Lambda ${:.2} ({:.3} \
             GB-s a change), API Gateway ${:.2}",
            self.total(),
            self.dynamodb,
            self.sqs,
            self.lambda,
            self.gb_s,
            self.api_gateway
        )
    }
}

pub fn per_million(c: &Counts) -> Cost {
    let million = 1_000_000.0;
    let worker_s = (c.worker_ms + c.crm_requests * CRM_REQUEST_MS) / 1000.0;
    let http_s = (c.invocations - 1.0).max(0.0) * HTTP_INVOCATION_MS / 1000.0;
    let gb_s = (worker_s + http_s) * MEMORY_GB;
    Cost {
        dynamodb: (c.wru * WRU + c.rru * RRU) * million,
        sqs: c.sqs * SQS * million,
        lambda: (c.invocations * LAMBDA_REQUEST + gb_s * LAMBDA_GB_S) * million,
        gb_s,
        api_gateway: c.http_requests * HTTP_API * million,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_one_write_one_read_one_message_costs_what_the_prices_say() {
        let c = per_million(&Counts {
            wru: 1.0,
            rru: 1.0,
            sqs: 3.0,
            invocations: 1.0,
            http_requests: 0.0,
            worker_ms: 100.0,
            crm_requests: 0.0,
        });
        assert!((c.dynamodb - 0.75).abs() < 1e-9);
        assert!((c.sqs - 1.2).abs() < 1e-9);
        // 0.1 s at 0.25 GB = 0.025 GB-s: $0.4167 per million, and $0.20 for the requests.
        assert!((c.lambda - (0.2 + 0.025 * 16.6667)).abs() < 1e-3);
        assert_eq!(c.api_gateway, 0.0);
    }
}
