"""The Zarr episode store: layout, background writer, reader, validation and repair, SFT dataset."""

from pld_robot.data.layout import CameraSpec, EpisodeInfo, Outcome, Source, StoreError, StoreSchema
from pld_robot.data.reader import EpisodeReader
from pld_robot.data.repair import repair
from pld_robot.data.validate import Problem, validate
from pld_robot.data.writer import EpisodeWriter, RecorderError, WriterConfig

__all__ = ["CameraSpec", "EpisodeInfo", "EpisodeReader", "EpisodeWriter", "Outcome", "Problem", "RecorderError",
           "Source", "StoreError", "StoreSchema", "WriterConfig", "repair", "validate"]
