//! The integration suite: one test binary, the real postrelay binary and the real
//! Postfix tools on temporary config directories (never /etc/postfix). What each test
//! needs (Postfix, root) and what happens when it is missing: see [`harness`].

mod harness;

mod agreement;
mod apply;
mod audit;
mod bad_input;
mod configured;
mod dns;
mod e2e;
mod faults;
mod generate;
mod hostile;
mod hostile_network;
mod import;
mod instance;
mod json;
mod live;
mod mailgun;
mod mailgun_api;
mod package;
mod parser;
mod record;
mod relay;
mod scale;
mod secrets;
mod smtp_peer;
mod smtps;
mod tls;
mod trust;
mod units;
mod verify;
mod wildcards;
