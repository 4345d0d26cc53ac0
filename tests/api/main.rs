//! Integration tests: the real server on 127.0.0.1:0, a real SQLite file, the
//! generated client. One binary, one file per capability.

mod concurrency;
mod connections;
mod crash;
mod events;
mod flows;
mod helpers;
mod hostile;
mod lifecycle;
mod limits;
mod migrate;
mod operations;
mod ownership;
mod pagination;
mod persistence;
mod process;
mod replicas;
mod roles;
mod scale;
mod sessions;
mod status_table;
mod tenancy;
mod timers;
mod tls;
mod transactional;
mod upgrade;
mod validation;
mod visibility;
mod web;
