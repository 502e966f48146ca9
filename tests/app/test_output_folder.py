"""The app's output folder: a sibling whose name starts with the folder's name is outside it."""

from accel.app.outputs import OutputFolder


def test_a_sibling_folder_sharing_the_name_prefix_is_outside(tmp_path):
    outputs = OutputFolder(tmp_path / "out")
    (tmp_path / "out-evil").mkdir()
    assert outputs.contains(tmp_path / "out" / "x.mp4") and outputs.contains(tmp_path / "out")
    assert not outputs.contains(tmp_path / "out-evil" / "x.mp4")  # a string-prefix check lets this in
    assert not outputs.contains(tmp_path / "out-evil")
    assert not outputs.contains(tmp_path / "out" / ".." / "out-evil" / "x.mp4")
    assert not outputs.contains(tmp_path)
