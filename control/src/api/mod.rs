//! The admin API's request and answer types, shared by the axum handlers
//! (`admin`) and the CLI client, and described by the OpenAPI document
//! served at `/openapi.json`.

pub mod progressive;
