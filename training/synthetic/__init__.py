"""Synthetic chest CT studies with exact ground truth and paired radiology reports.

Public API::

    from training.synthetic import SynthConfig, SynthStudy, make_study, write_study
    study = make_study(seed, SynthConfig.preset("fast"))
    write_study(study, out_dir)

See ``configs/synthetic.yaml`` for tissue values, kernels, presets and report tables.
"""

from training.synthetic.config import NoduleSpec, SynthConfig
from training.synthetic.dicom_writer import write_study
from training.synthetic.study import SynthStudy, make_study

__all__ = ["NoduleSpec", "SynthConfig", "SynthStudy", "make_study", "write_study"]
