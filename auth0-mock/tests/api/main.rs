//! The mock Auth0 tenant over real HTTP. Every test starts its own server on
//! 127.0.0.1 port 0 with the shipped fixture, so all run in parallel; tokens
//! are checked with the mock's own `validate` and with a standard JWT library
//! (`jsonwebtoken`) fed from the served JWKS.

mod common;

mod admin;
mod discovery;
mod grants;
mod rotation;
mod validation;
