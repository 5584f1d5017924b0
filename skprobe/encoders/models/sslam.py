"""SSLAM ViT-B/16 encoder, pretrained and AudioSet-fine-tuned.

Mirrors the official release of "SSLAM: Enhancing Self-Supervised Models with
Audio Mixtures for Polyphonic Soundscapes" (Alex et al., ICLR 2025),
https://github.com/ta012/SSLAM. SSLAM continues EAT's pre-training (stage 2,
with audio mixtures and a source retention loss) and keeps EAT's model code
and inference pipeline unchanged: ``SSLAM_Inference/feature_extract`` is EAT's
script (same fbank, ``target_length=1024``, normalisation ``-4.268`` /
``4.569``, ``extract_features(..., mask=False, remove_extra_tokens=False)``), and
the README states that EAT users can swap in SSLAM's weights. skprobe therefore
uses :class:`~skprobe.encoders.models.eat.EAT` with SSLAM's checkpoints:

* ``SSLAM_Pretrained/checkpoint_last.pt``: a fairseq ``data2vec_multi``
  pretraining checkpoint (``model`` with ``modality_encoders.IMAGE.*``,
  ``blocks.*``, the CNN decoder and the ``_ema`` teacher; the position table
  has 768 x 8 rows, ``max_length=768``);
* ``SSLAM_AS2M_Finetuned/checkpoint_best.pt``: a fairseq
  ``mae_image_classification`` checkpoint (backbone under ``model.``, plus
  ``fc_norm`` and the 527-class ``head``).
"""

from __future__ import annotations

from ..registry import register_builtin
from .eat import eat_spec

__all__: list[str] = []

_LICENSE = "MIT (licence of the ta012/SSLAM repository that links the checkpoints)"
_EXTRA = {
    "paper": "https://openreview.net/forum?id=odU59TxdiB",
    "code": "https://github.com/ta012/SSLAM",
    "architecture": "EAT (skprobe.encoders.models.eat.EAT)",
}

register_builtin(
    eat_spec(
        "sslam",
        weights_source="https://drive.google.com/drive/folders/1aA65-qQCHSCrkiDeLGUtn1PiEjJi5HS8 "
        "(folder SSLAM_Pretrained; linked from https://github.com/ta012/SSLAM)",
        weights_file="checkpoint_last.pt",
        description="SSLAM ViT-B/16 pretrained on AudioSet-2M with audio mixtures (Alex et al. 2025); "
        "EAT architecture, [cls] + 64x8 patches",
        license=_LICENSE,
        extra=_EXTRA,
    ),
)
register_builtin(
    eat_spec(
        "sslam-as2m-ft",
        weights_source="https://drive.google.com/drive/folders/1Yy38IyksON5RJFNM7gzeQoAOSPnEIKp2 "
        "(folder SSLAM_AS2M_Finetuned; linked from https://github.com/ta012/SSLAM)",
        weights_file="checkpoint_best.pt",
        description="SSLAM pretrained and fine-tuned on AudioSet-2M (50.2 mAP); backbone tokens "
        "(classification head dropped)",
        license=_LICENSE,
        extra={**_EXTRA, "fine_tuned_on": "AudioSet-2M"},
    ),
)
