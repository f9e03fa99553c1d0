//! The fixture app as real processes on 127.0.0.1, started with `colony::testing::Processes`:
//! instances that call each other over mutual TLS and the faults of real processes
//! (`processes`), and the HTTP gateway in front of them (`gateway`). One test binary, a
//! module per topic; what they share is in `support`.

mod gateway;
mod processes;
mod support;
