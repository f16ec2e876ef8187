fn main() {
    println!("tosskey {}", env!("CARGO_PKG_VERSION"));
}
