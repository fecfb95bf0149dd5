fn main() {
    println!("paxosstore: not yet");
}
