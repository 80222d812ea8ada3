//! The server-sent events of `GET /deployments/{id}/events` and
//! `GET /upgrades/{id}/events`, as the OpenAPI document describes them.
//!
//! OpenAPI 3.1 has no item schema for `text/event-stream`; the convention
//! (schemathesis reads it so) is that the media type's `schema` describes
//! one event: its `event`, `id` and `data` fields. `data` is JSON text whose
//! own schema is given by `contentSchema`.

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::{Event, EventKind, UpgradeEvent};

/// One event of a deployment's stream: `event:` its kind, `id:` its `seq`,
/// `data:` the [`Event`] as JSON.
pub struct DeploymentStreamEvent;

impl PartialSchema for DeploymentStreamEvent {
    fn schema() -> RefOr<Schema> {
        sse_event(
            Ref::from_schema_name(EventKind::name()).into(),
            &Event::name(),
            "a deployment event; the stream ends after the `outcome` event",
        )
    }
}

impl ToSchema for DeploymentStreamEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((EventKind::name().into(), EventKind::schema()));
        schemas.push((Event::name().into(), Event::schema()));
        Event::schemas(schemas);
    }
}

/// One event of an upgrade's stream: `event:` `step` or `outcome`, `id:`
/// its `seq`, `data:` the [`UpgradeEvent`] as JSON.
pub struct UpgradeStreamEvent;

impl PartialSchema for UpgradeStreamEvent {
    fn schema() -> RefOr<Schema> {
        let kind = ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(["step", "outcome"]))
            .build();
        sse_event(
            kind.into(),
            &UpgradeEvent::name(),
            "an upgrade step; the stream ends after the `outcome` event",
        )
    }
}

impl ToSchema for UpgradeStreamEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((UpgradeEvent::name().into(), UpgradeEvent::schema()));
        UpgradeEvent::schemas(schemas);
    }
}

fn sse_event(kind: RefOr<Schema>, data: &str, description: &str) -> RefOr<Schema> {
    let string = || ObjectBuilder::new().schema_type(SchemaType::new(Type::String));
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .description(Some(description))
        .property("event", kind)
        .required("event")
        .property("id", string().description(Some("the event's `seq`")))
        .required("id")
        .property(
            "data",
            string()
                .content_media_type("application/json")
                .content_schema(Some(Ref::from_schema_name(data))),
        )
        .required("data")
        .into()
}
