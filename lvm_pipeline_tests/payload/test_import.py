"""A payload published elsewhere (``lvm run --payload PATH``) is refused, naming the file, when
PATH holds no payload build."""

from __future__ import annotations

import pytest

from lvm_pipeline.payload import find_payload_build
from lvm_pipeline.store import ArtifactError


@pytest.mark.parametrize(("manifest", "reason"), [
    ("[]", "holds a JSON list, not a manifest"),
    ('{"kind": "index"}', "a 'index' build, not a payload"),
    ("{not json", "not valid JSON"),
])
def test_a_folder_whose_manifest_is_not_a_payloads_is_refused_naming_it(tmp_path, manifest,
                                                                        reason):
    (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(ArtifactError, match=rf"^{tmp_path}/manifest\.json: {reason}"):
        find_payload_build(tmp_path)
