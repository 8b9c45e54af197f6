// The moto helper is shared with the ops command tests.
#[path = "../../../infra/test-support/moto.rs"]
pub mod moto;
