"""The `sspq-hsi` command (pyproject.toml's [project.scripts]; `python -m sspq_hsi` is the same):

    sspq-hsi detect scenes/ --workers 2          # Stage 3 on many scenes (detect.py, scene_task.py, engines.py)
    sspq-hsi pretrain --scenes scenes/           # Stages 1 + 2 (main_pretrain.py)
    sspq-hsi export detector --detector_ckpt D --out portable.pth   # anomaly/export_detector.py

Each command is a module of this package with `main(argv, prog) -> exit status`, imported only when named, so
`--help` answers before torch loads. The stage scripts run as before; these commands call the same functions.
"""
