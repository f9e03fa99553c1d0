use colony::microservice;

#[microservice]
pub async fn fire(event: String) {
    let _ = event;
}

fn main() {}
