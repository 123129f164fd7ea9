#[path = "../../build/torch_link.rs"]
mod torch_link;

fn main() {
    torch_link::emit();
}
