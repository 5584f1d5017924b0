"""Sound event detection with probes trained on clip labels.

- :func:`frame_scores`: frame-wise class probabilities of clips through a
  fitted ``Pipeline(FrozenEncoderTransformer, probe)``.
- :func:`detect_events`: events (file, onset, offset, class, score) in
  recordings of any length, streamed in overlapping windows
  (:mod:`~skprobe.detection.windows`), median filtered and thresholded
  (:mod:`~skprobe.detection.postprocess`); :func:`choose_thresholds` picks
  the thresholds on labelled validation clips.
- :func:`write_events` / :func:`read_events`: CSV and DCASE-style TSV.
- :func:`detection_metrics`: PSDS1, PSDS2, event- and segment-based F1
  (``sed_scores_eval``; ``pip install 'skprobe[detection]'``).
"""

from .detect import detect_events, list_recordings, stream_frame_scores
from .evaluation import PSDS_SCENARIOS, detection_metrics, ground_truth_events, score_table
from .events import events_frame, events_text, read_events, write_events
from .postprocess import Event, EventTracker, MedianFilter
from .scorer import FrameScorer, FrameScores, frame_scores
from .thresholds import best_f1_threshold, choose_thresholds
from .windows import FrameStitcher, WindowPlan, audio_blocks

__all__ = [
    "Event",
    "EventTracker",
    "FrameScorer",
    "FrameScores",
    "FrameStitcher",
    "MedianFilter",
    "PSDS_SCENARIOS",
    "WindowPlan",
    "audio_blocks",
    "best_f1_threshold",
    "choose_thresholds",
    "detect_events",
    "detection_metrics",
    "events_frame",
    "events_text",
    "frame_scores",
    "ground_truth_events",
    "list_recordings",
    "read_events",
    "score_table",
    "stream_frame_scores",
    "write_events",
]
