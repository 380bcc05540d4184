import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch() -> None:
    # Tiny tensors: thread start-up and contention cost far more than the math.
    torch.set_num_threads(1)
