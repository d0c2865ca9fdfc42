"""Servers hydrodiag is compared with, each run from its own virtual environment (bench/.envs/)."""

# hydrodiag's package import sets up how torch_geometric is loaded (hydrodiag.lazy_imports: no
# torch._dynamo unless something compiles); importing it first gives the competitors the same
# memory footprint for the same model code, as it would any user of the library.
import hydrodiag  # noqa: F401
