// The targets that link libtorch need its library folder in their run path, as every lits
// binary does (see build/torch_link.rs).
#[path = "../build/torch_link.rs"]
mod torch_link;

fn main() {
    torch_link::emit();
}
