from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Real clips, photos and faces (../shared/data beside the checkout)."""
    assert DATA.is_dir(), f"test data not found at {DATA}: check out ../shared beside the repo"
    return DATA


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (ray.init takes seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()
