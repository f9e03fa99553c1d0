//! Independent mistakes are all reported in one build.
use colony::microservice;

#[microservice(exposed, colour = "red")]
pub fn quote(&self, (a, b): (u32, u32), text: &str) -> u64 {
    u64::from(a + b) + text.len() as u64
}

fn main() {}
