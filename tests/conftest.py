

# ---- data area fixtures (datasets/) ----
import pytest as _data_pytest


@_data_pytest.fixture
def data_make_raw(tmp_path):
    """Factory: write a small synthetic raw Stanford dataset; returns (raw_dir, SyntheticDataset)."""
    from datasets.synthetic import generate_synthetic_stanford

    def make(layout="updated", archives=True, doubled=False, classes=4, per_class=6, name="raw", **kwargs):
        raw = tmp_path / name
        result = generate_synthetic_stanford(raw, layout=layout, num_classes=classes, images_per_class=per_class,
                                             archives=archives, doubled_folders=doubled, **kwargs)
        return raw, result

    return make


@_data_pytest.fixture(autouse=True, scope="session")
def close_progress_bars():
    """Trainings interrupted on purpose leave Lightning's tqdm bars open; close them inside the session so they
    do not print after pytest's closing summary line."""
    yield
    from tqdm import tqdm

    for bar in list(tqdm._instances):
        bar.close()
