"""Print how far the tiny BEATs / Dasheng outputs are from their float32 reference files.

Run from the repository root: ``python tests/data/reference_numerics.py``. For each
encoder it prints the maximum absolute difference of this machine's float32 output,
of the same module run in float64 (front end included), and of the reference file,
plus where the float32 front end departs most from float64. The test docstrings of
``test_matches_reference_numbers`` quote these numbers.
"""

import sys
from pathlib import Path

import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import test_beats as tb  # noqa: E402
import test_dasheng as td  # noqa: E402


def _max(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def main() -> None:
    torch.set_num_threads(1)
    with torch.inference_mode():
        ref = torch.load(tb.DATA / "beats_tiny_reference.pt", weights_only=True)
        enc = tb.tiny_beats()
        enc.load_state_dict(tb.tiny_state(enc), strict=True)
        wav = tb.reference_wave()
        out, exact = enc.forward_layers(wav, [0, 1]), tb.float64_forward(enc, wav, [0, 1])
        for i in (0, 1):
            want = ref[f"layer{i}"]
            print(f"beats layer {i}: f32 vs ref {_max(out[i], want):.2e}, f32 vs f64 {_max(out[i], exact[i]):.2e}, "
                  f"ref vs f64 {_max(want, exact[i]):.2e}, scale {want.abs().max().item():.2f}")
        s32 = enc.spectrogram(wav).double()[0]
        s64 = torchaudio.compliance.kaldi.fbank(
            wav.double() * 2**15, num_mel_bins=128, sample_frequency=16000, dither=0.0, window_type="povey")
        s64 = (s64 - tb.FBANK_MEAN) / (2 * tb.FBANK_STD)
        err = (s32 - s64).abs().amax(0)
        log_mel = s64 * 2 * tb.FBANK_STD + tb.FBANK_MEAN
        worst = err.topk(3).indices
        print(f"beats fbank: f32 vs f64 up to {err.max().item():.3f} (normalised) in mel bins {worst.tolist()}, "
              f"whose log-mel lies {(log_mel.max() - log_mel[:, worst].amin()).item():.1f} nats below the peak")

        ref = torch.load(td.DATA / "dasheng_tiny_reference.pt", weights_only=True)["tokens"]
        enc = td.tiny_dasheng()
        enc.load_state_dict(td.tiny_state(), strict=True)
        enc64 = enc.__class__(dim=32, depth=2, num_heads=2, target_length=64).double().eval()
        enc64.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in td.tiny_state().items()})
        enc64.spectrogram = lambda w: enc64.init_bn(enc64.front_end(w.double()).unsqueeze(1))
        wav = td.reference_wave()
        out, exact = enc(wav), enc64(wav.double())
        print(f"dasheng: f32 vs ref {_max(out, ref):.2e}, f32 vs f64 {_max(out, exact):.2e}, "
              f"ref vs f64 {_max(ref, exact):.2e}, scale {ref.abs().max().item():.2f}")


if __name__ == "__main__":
    main()
