"""Generated media shared by the media tests (written once per session, ~0.5 MB, a few seconds)."""

from __future__ import annotations

import pytest

from emollm.media.fixtures import make_fixture_set


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Name -> FixtureClip/Path of the standard fixture set (see ``make_fixture_set``)."""
    return make_fixture_set(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def haar():
    from emollm.media import HaarFaceDetector

    return HaarFaceDetector()


@pytest.fixture(scope="session")
def mtcnn():
    pytest.importorskip("facenet_pytorch")
    from emollm.media import MTCNNFaceDetector

    return MTCNNFaceDetector()
