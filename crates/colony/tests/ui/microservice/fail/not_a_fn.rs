use colony::microservice;

#[microservice]
pub struct Quote {
    pub cents: u64,
}

fn main() {}
