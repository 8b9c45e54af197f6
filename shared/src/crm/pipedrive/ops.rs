//! The operations the client uses, by their official `operationId`, with each one's token
//! cost (`x-token-cost` in the specs) and HTTP method.

use reqwest::Method;

/// Token cost (`x-token-cost` in the official specs) of every operation the client uses.
pub const TOKEN_COSTS: &[(&str, u64)] = &[
    ("getPersons", 10),
    ("getPerson", 1),
    ("addPerson", 5),
    ("updatePerson", 5),
    ("deletePerson", 3),
    ("searchPersons", 20),
    ("getPersonFields", 10),
    ("addPersonField", 5),
    ("getCurrentUser", 2),
    ("getWebhooks", 10),
    ("addWebhook", 10),
    ("deleteWebhook", 6),
    ("getPersonChangelog", 20),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    ListPersons,
    GetPerson,
    AddPerson,
    UpdatePerson,
    DeletePerson,
    SearchPersons,
    ListFields,
    AddField,
    CurrentUser,
    ListWebhooks,
    AddWebhook,
    DeleteWebhook,
    PersonChangelog,
}

impl Op {
    pub(super) fn operation_id(self) -> &'static str {
        match self {
            Op::ListPersons => "getPersons",
            Op::GetPerson => "getPerson",
            Op::AddPerson => "addPerson",
            Op::UpdatePerson => "updatePerson",
            Op::DeletePerson => "deletePerson",
            Op::SearchPersons => "searchPersons",
            Op::ListFields => "getPersonFields",
            Op::AddField => "addPersonField",
            Op::CurrentUser => "getCurrentUser",
            Op::ListWebhooks => "getWebhooks",
            Op::AddWebhook => "addWebhook",
            Op::DeleteWebhook => "deleteWebhook",
            Op::PersonChangelog => "getPersonChangelog",
        }
    }

    pub(super) fn cost(self) -> u64 {
        let id = self.operation_id();
        TOKEN_COSTS
            .iter()
            .find(|(op, _)| *op == id)
            .map_or(20, |(_, c)| *c)
    }

    pub(super) fn method(self) -> Method {
        match self {
            Op::AddPerson | Op::AddField | Op::AddWebhook => Method::POST,
            Op::UpdatePerson => Method::PATCH,
            Op::DeletePerson | Op::DeleteWebhook => Method::DELETE,
            _ => Method::GET,
        }
    }
}
