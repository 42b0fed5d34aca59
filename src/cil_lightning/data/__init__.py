"""Video data: data sets, the datamodule, and video files."""
