"""The PEFT reference of tests/lora/ (tests/lora_reference.py), built once per session."""
import pytest
from lora_reference import build_reference


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    return build_reference(tmp_path_factory.mktemp("lora"))
