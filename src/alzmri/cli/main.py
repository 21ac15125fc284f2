"""The ``alzmri`` command line. Heavy libraries are imported only inside commands."""

from __future__ import annotations

import typer

from alzmri import __version__
from alzmri.cli.builder import add_config_command, run_guarded
from alzmri.cli.commands.convert import ConvertCommand
from alzmri.cli.commands.demo import DemoConfig
from alzmri.cli.commands.preprocess import PreprocessCommand
from alzmri.app.config import ServeConfig
from alzmri.cli.commands.synth import SynthCommand
from alzmri.data.config import AuditConfig, SplitConfig
from alzmri.data.slices.config import EdaConfig, ImportSlicesConfig, SliceAuditConfig, SlicesConfig
from alzmri.evaluation.config import BaselineConfig, CompareConfig, CrossValidateConfig, EvaluateConfig, FusionAblationConfig, EvaluateProgressionConfig, ExportConfig, PredictConfig, ReportConfig
from alzmri.explain.config import ExplainConfig
from alzmri.generate.config import ProgressConfig, ProgressionConfig
from alzmri.training.config import TrainConfig

app = typer.Typer(
    name="alzmri",
    help="Alzheimer's disease detection from structural MRI, with honest subject-level evaluation.\n\n"
    "Typical path: synth (or your BIDS/manifest) → preprocess → split → audit → train → evaluate → predict. "
    "'alzmri demo' runs it all on a synthetic cohort.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

add_config_command(app, "synth", SynthCommand, "alzmri.cli.commands.synth:run",
    "Build a synthetic T1w cohort (BIDS) from the MNI152 template shipped with nilearn: per-subject anatomy, "
    "1–3 sessions, scanner variation and graded AD-like atrophy whose location is recorded. --longitudinal follows every "
    "subject through the stages (one visit per stage at its own pace) and records where atrophy advanced between visits.",
    ["alzmri synth cohort --subjects 60 --classes CN,MCI,AD --seed 1", "alzmri synth small --subjects 20 --voxel-size 2",
     "alzmri synth followed --longitudinal --subjects 60 --voxel-size 2   # one visit per CDR stage, true change masks",
     "alzmri synth followed-dx --longitudinal --stages diagnosis --subjects 40   # CN → MCI → AD"])
add_config_command(app, "convert", ConvertCommand, "alzmri.cli.commands.convert:run",
    "Convert DICOM series (any folder layout) to BIDS-like NIfTI with JSON sidecars. Each series is classified from its "
    "tags (sequence, image type, TR/TE/TI, slices): only 3D T1w (MPRAGE, SPGR, TFE) series become anat/*_T1w; field maps, "
    "localizers, derived images and other contrasts are skipped with the reason in conversion.tsv; DICOM warnings go to "
    "conversion.log. Writes manifest.tsv (fill in diagnosis) for preprocess. Resumable.",
    ["alzmri convert dicom nifti", "alzmri convert /data/dicom out --min-slices 20 --no-progress"])
add_config_command(app, "preprocess", PreprocessCommand, "alzmri.cli.commands.preprocess:run",
    "Raw T1w scans (NIfTI, Analyze, MGZ, MINC, NRRD, MetaImage, DICOM folders or zips; skull on, any orientation) → "
    "cached model-ready arrays: reorient to RAS, resample, N4 bias correction, skull stripping (deepbet networks shipped "
    "in its wheel, offline; or the template method; or SynthStrip/HD-BET/BET if installed), optional MNI152 registration, "
    "crop, resize, normalise. Parallel (-j), shardable (--shard I/N) or on a Dask cluster (--scheduler), resumable, "
    "content+settings hashed; QC flags implausible masks (volume, scalp contact, border, registration, method "
    "disagreement, sessions of one subject) in qc.tsv and a self-contained qc.html. Exit code 2 if any scan failed "
    "(the others are cached).",
    ["alzmri preprocess manifest.tsv cache -j 4", "alzmri preprocess cohort cache64 --size 64 --spacing 2 --skull-strip none",
     "alzmri preprocess raw cache --strip-check template --fail-on-qc",
     "alzmri preprocess raw cache --shard $SLURM_ARRAY_TASK_ID/8 -j $SLURM_CPUS_PER_TASK",
     "alzmri preprocess raw cache --scheduler tcp://10.0.0.5:8786",
     "alzmri preprocess raw cache --steps reorient,resample,n4,skull_strip,register,crop,resize,normalize",
     "alzmri preprocess raw cache --config preprocess.yaml"])
add_config_command(app, "import-slices", ImportSlicesConfig, "alzmri.cli.commands.slices:run_import",
    "2D slice images (PNG/JPEG/TIFF/BMP, 8/16-bit, gray or RGB) in class folders (optionally inside train/ val/ test/ "
    "folders, whose split is kept in OUT/split) or listed in a manifest → a slice cache for split, train and evaluate. "
    "Class names are data: the four OASIS stages (NonDemented, VeryMildDemented, MildDemented, ModerateDemented; CDR 0, "
    "0.5, 1, 2) and CN/MCI/AD are known and ordered, other folder names need --label-map. Subject, session and slice ids "
    "come from file names (--names preset or regex); slices without a subject id are kept and marked as such. Images are "
    "padded square, resized to --size (mixed sizes: a warning) and z-scored over the foreground. Resumable.",
    ["alzmri import-slices kaggle-4class slices --names slice_set",
     "alzmri import-slices oasis-slices slices --names oasis --size 256",
     "alzmri import-slices pngs slices --label-map 'Non_Demented=CN,Mild_Demented=AD' --names '(?P<participant_id>sub-\\d+)_z(?P<slice_index>\\d+)'",
     "alzmri import-slices slices.tsv slices"])
add_config_command(app, "slices", SlicesConfig, "alzmri.cli.commands.slices:run_slices",
    "Cut 2D (or 2.5D: --context 1, three adjacent slices as channels) slices from the volumes of a preprocessing cache, "
    "n slices around the brain's centre of mass, so 2D, 2.5D and 3D models can be compared on the same subjects and split "
    "(split the slice cache, or reuse the volumes' split folder). Resumable.",
    ["alzmri slices cache slices --plane axial --n 5 --step 2",
     "alzmri slices cache slices25d --plane coronal --n 9 --context 1"])
add_config_command(app, "slice-audit", SliceAuditConfig, "alzmri.cli.commands.slices:run_audit",
    "For slices without subject ids: find, for every test slice, its most similar training slice (normalised cross-correlation "
    "of downsampled images, small shifts allowed; vectorised) and count the test slices that probably come from a person seen "
    "in training. The threshold is calibrated on slices with known subjects (same person's neighbouring slices vs strangers' "
    "best matches; --calibrate) or given (--threshold). Writes audit.tsv, summary.json, ncc.png and pairs.png.",
    ["alzmri slice-audit slices --calibrate synthetic-slices", "alzmri slice-audit slices split --threshold 0.95 --out audit"])
add_config_command(app, "eda", EdaConfig, "alzmri.cli.commands.slices:run_eda",
    "Look at a slice dataset before training: class counts, the mean slice per class, difference maps between adjacent "
    "stages, intensity histograms per class and the SSIM between adjacent-stage means, on one self-contained HTML page.",
    ["alzmri eda slices --out eda", "alzmri eda kaggle-slices --limit 500"])
add_config_command(app, "split", SplitConfig, "alzmri.cli.commands.split:run_split",
    "Subject-level splits: round-robin train/val/test by scan count, or stratified group k-fold. "
    "No subject is ever in two splits.",
    ["alzmri split cohort split --ratios 0.8,0.1,0.1", "alzmri split manifest.tsv folds --method kfold --folds 5"])
add_config_command(app, "audit", AuditConfig, "alzmri.cli.commands.split:run_audit",
    "Exit non-zero and name every subject found in more than one split.",
    ["alzmri audit split", "alzmri audit folds"])
add_config_command(app, "train", TrainConfig, "alzmri.cli.commands.train:run",
    "Train a registered model with Lightning (class-weighted CE, early stopping, 3 checkpoints), "
    "tracked in MLflow (local SQLite), TensorBoard and a run folder. Refuses a leaky split. "
    "Picks CUDA, then Apple MPS, then CPU; under torchrun it trains with DDP (one result from rank 0).",
    ["alzmri train cache split --epochs 50",
     "alzmri train cache split --model liu2022 --width 8 --age-encoding --lr 1e-4 --out runs",
     "alzmri train cache split --model r3d_18 --pretrained r3d_18-kinetics.pth --freeze-until layer2 --warmup-epochs 2",
     "alzmri train --resume runs/liu2022-1a2b3c4d",
     "alzmri train cache split --out runs --register-model ad-classifier   # then: alzmri serve models:/ad-classifier/1 --tracking-uri sqlite:///runs/mlflow.db",
     "torchrun --nproc_per_node 4 -m alzmri train cache split --model r3d_18 --batch-size 4"])
add_config_command(app, "cv", CrossValidateConfig, "alzmri.evaluation.cross_validate:cross_validate",
    "Subject-level stratified group k-fold cross-validation: one resumable training run per fold, each evaluated on "
    "its held-out fold; prints per-fold metrics and mean ± sd (accuracy, balanced accuracy, macro-F1, macro-AUC). "
    "--model pca_logreg or linear_svm runs the linear baseline of 'alzmri baseline' on the same folds instead.",
    ["alzmri cv cache --folds 5 --epochs 40 --out cv", "alzmri cv cache --split folds --model r3d_18 --pretrained r3d_18.pth",
     "alzmri cv cache --model pca_logreg --out cv-linear && alzmri compare cv cv-linear"])
add_config_command(app, "ablate-fusion", FusionAblationConfig, "alzmri.evaluation.fusion_ablation:ablate",
    "Does fusing genetics with MRI help? genetics_only, mri_only (the encoder alone), fusion_concat, fusion_xattn and a "
    "shuffled-genetics control (genetic rows permuted across participants), each an 'alzmri cv' on the same subject-level "
    "folds, genetics matched by participant_id and encoded from each fold's training subjects; pooled out-of-fold AUC and "
    "balanced accuracy with subject-bootstrap CIs, pairwise DeLong / McNemar, and the genetic columns ranked by attention.",
    ["alzmri ablate-fusion cache bids/phenotype/genetics.tsv --folds 5 --epochs 20 --out ablation",
     "alzmri ablate-fusion cache genetics.tsv --encoder liu_cnn_compact --arms mri_only,fusion_xattn,shuffled_genetics"])
add_config_command(app, "evaluate", EvaluateConfig, "alzmri.cli.commands.evaluate:run_evaluate",
    "Predict on the validation and held-out test subjects, then write predictions.tsv and the report "
    "(report.html, metrics.json, PNG figures): scan- and subject-level metrics with subject-bootstrap 95 % CIs, "
    "a threshold chosen on validation and applied to test, PPV/NPV at --prevalence, leakage checks.",
    ["alzmri evaluate runs/RUN/checkpoints/best-loss.ckpt cache split", "alzmri evaluate best.ckpt cache split --prevalence 0.3 --out eval"])
add_config_command(app, "baseline", BaselineConfig, "alzmri.cli.commands.baseline:run",
    "A linear baseline to publish beside any network: StandardScaler + PCA + logistic regression (pca_logreg) or "
    "linear SVM (linear_svm) on the brain voxels of the cached scans (mask from the training scans only, optional "
    "--downsample). PCA size and C are chosen by subject-level inner cross-validation on the training subjects; the val "
    "scans set the report's threshold, as for a network. Writes a run folder with model.npz (plain arrays, no pickle) "
    "and eval-test/ (the same predictions.tsv and report as 'alzmri evaluate'), so 'alzmri compare CNN_RUN BASELINE_RUN' "
    "works. Refuses a leaky split; re-running reports the finished result.",
    ["alzmri baseline cache split", "alzmri baseline cache split --model linear_svm --downsample 2 --out runs",
     "alzmri baseline cache split --components 10,50,0.9 --c-values 0.001,0.01 --scoring neg_log_loss",
     "alzmri compare runs/resnet10_3d-1a2b3c4d runs/pca_logreg-5e6f7a8b"])
add_config_command(app, "report", ReportConfig, "alzmri.cli.commands.evaluate:run_report",
    "The evaluation report of any predictions table (alzmri's or another tool's): one self-contained report.html, "
    "metrics.json and PNGs. Shows a leakage banner when a subject or image is in two splits.",
    ["alzmri report runs/RUN/eval-test/predictions.tsv", "alzmri report other_tool.csv --prevalence 0.05 --out report"])
add_config_command(app, "compare", CompareConfig, "alzmri.cli.commands.evaluate:run_compare",
    "Compare two models on the same subjects: DeLong test of AUCs, McNemar test and a paired subject-bootstrap interval "
    "(predictions), or the corrected resampled and Bayesian correlated t-tests (two 'alzmri cv' folders).",
    ["alzmri compare runs/A runs/B", "alzmri compare cv-liu cv-r3d --out compare.json"])
add_config_command(app, "explain", ExplainConfig, "alzmri.cli.commands.explain:run",
    "Attribution maps (Grad-CAM, Grad-CAM++, occlusion, saliency, SmoothGrad, integrated gradients) for cached or raw scans: "
    "map NIfTI, tri-planar overlay, sweep GIF, depth profile, thresholded regions, and a parameter-randomisation sanity check. "
    "Maps are judged against the brain mask preprocessing stored: the share of evidence outside the brain is reported and "
    "a map whose evidence lies mostly there is flagged; empty maps are said to be empty.",
    ["alzmri explain runs/RUN --cache cache --split split --data test --limit 4",
     "alzmri explain runs/RUN --scan sub-01_T1w.nii.gz --method integrated_gradients",
     "alzmri explain runs/RUN --cache cache --split split --truth bids/derivatives/synth --regions --target true --method occlusion",
     "alzmri explain runs/RUN --cache cache --split split --label-randomized runs/SHUFFLED   # after: alzmri train cache split --shuffle-labels",
     "alzmri explain runs/RUN --cache spm-cache --split split --regions --input-space MNI152   # scans normalised by SPM or Clinica"])
add_config_command(app, "train-progression", ProgressionConfig, "alzmri.cli.commands.progression:run_train",
    "Train disease-progression generators: one encoder-decoder per stage transition (e.g. NonDemented → VeryMildDemented → "
    "MildDemented → ModerateDemented), chained at use. Paired on longitudinal data (the same subject's images at adjacent "
    "stages, + L1 to the true follow-up), else unpaired stage sets with cycle consistency; the run states which. Residual "
    "generators (input + predicted change) by default; the discriminator's patch scores are weighted by the brain mask "
    "(--no-roi for the ablation). Losses and sample grids per epoch in MLflow; resumable epoch by epoch.",
    ["alzmri train-progression slices split --epochs 30", "alzmri train-progression kaggle-slices split --pairing unpaired --stages NonDemented,VeryMildDemented,MildDemented",
     "alzmri train-progression slices split --no-roi --run-name no-roi", "alzmri train-progression cache64 split   # 3D volumes"])
add_config_command(app, "progress", ProgressConfig, "alzmri.cli.commands.progression:run_progress",
    "What comes next for one scan: the image at every later stage (each generator's output feeds the next), the change "
    "maps (generated − input) and a GIF through the chain. The scan must be prepared as the run's training data.",
    ["alzmri progress progression-runs/progression-1a2b3c4d slices/arrays/sub-001_ses-01_axial-030.1a2b.npy",
     "alzmri progress RUN slice.png --stage VeryMildDemented --out next"])
add_config_command(app, "evaluate-progression", EvaluateProgressionConfig, "alzmri.cli.commands.progression:run_evaluate",
    "Judge progression generators on held-out subjects: MSE, PSNR, SSIM, MS-SSIM (whole image and brain) of each generated "
    "next-stage image against the person's true one, beside the no-change and mean-change baselines, with paired "
    "subject-bootstrap intervals; the chain's drift step by step; the stage a classifier sees at each step; FID on the "
    "classifier's features (and your own feature network); on registered inputs, how much of the change falls in the "
    "atlas regions. Without longitudinal subjects it says that no true future exists and reports the rest.",
    ["alzmri evaluate-progression progression-runs/RUN --cache slices --split split --classifier runs/small_cnn_2d-1a2b/checkpoints/best-loss.ckpt",
     "alzmri evaluate-progression RUN --cache kaggle-slices --split split --classifier stage.ckpt --feature-net features.pt"])
add_config_command(app, "predict", PredictConfig, "alzmri.cli.commands.evaluate:run_predict",
    "Predict diagnoses for raw scans; the checkpoint alone defines preprocessing and model.",
    ["alzmri predict best-loss.ckpt scan1.nii.gz scan2.nii.gz --out preds.tsv", "alzmri predict best-loss.ckpt cohort",
     "alzmri predict best-loss.onnx cohort --engine onnxruntime --threads 2   # a model from 'alzmri export'"])
add_config_command(app, "export", ExportConfig, "alzmri.cli.commands.evaluate:run_export",
    "Export a checkpoint as ONNX (ONNX Runtime: Python, C++, C#, JavaScript) or TorchScript (LibTorch). The file outputs class "
    "probabilities, takes any batch size and carries the classes and preprocessing, so 'alzmri predict FILE' needs nothing else; "
    "after writing, it is checked against PyTorch (probabilities within 1e-4).",
    ["alzmri export runs/RUN/checkpoints/best-loss.ckpt", "alzmri export best-loss.ckpt --format torchscript --out model.pt",
     "alzmri predict runs/RUN/checkpoints/best-loss.onnx scan.nii.gz"])
add_config_command(app, "serve", ServeConfig, "alzmri.cli.commands.serve:run",
    "Serve a model as a web page and JSON API: upload a NIfTI, a zip of one DICOM series or a slice image (whichever the model "
    "takes) and see the class probabilities, QC, the evidence map over the preprocessed scan and downloads. The checkpoint's own "
    "preprocessing is applied; localhost only unless a --token is given; uploads are never kept unless --keep-uploads.",
    ["alzmri serve runs/RUN/checkpoints/best-loss.ckpt", "alzmri serve best-loss.onnx --workers 2 --queue 8",
     "alzmri serve models:/ad-classifier/1 --tracking-uri sqlite:///runs/mlflow.db   # from the MLflow model registry",
     "alzmri serve kaggle-classifier/RUN/checkpoints/best-loss.ckpt --progression progression-runs/unpaired   # and the generated later stages",
     "ALZMRI_TOKEN=$(openssl rand -hex 16) alzmri serve best-loss.ckpt --host 0.0.0.0 --port 8080"])
add_config_command(app, "demo", DemoConfig, "alzmri.cli.commands.demo:run",
    "Run synth → preprocess → split → train → evaluate on a synthetic CN/AD cohort and print the held-out result.",
    ["alzmri demo", "alzmri demo demo-out --subjects 120 --epochs 40"])


models_app = typer.Typer(help="Registered model architectures: list them, or size one before training.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(pattern: str = typer.Argument("*", help="Shell-style pattern, e.g. 'r3d*'.")) -> None:
    """List registered models with their parameter counts and input sizes.

    [bold]Examples[/bold]

      $ alzmri models list

      $ alzmri models list 'liu*'
    """

    def go() -> None:
        import alzmri.fusion  # noqa: F401  (registers the fusion models)
        from alzmri.models import list_models, model_info
        from alzmri.models.profile import count_parameters_of

        print(f"{'model':20s} {'params':>9s}  {'input':>16s}  description")
        for name in list_models(pattern):
            info = model_info(name)
            power = "²" if info.spatial_dims == 2 else "³"
            size = f"≥{info.min_input_size}{power} (for {info.default_input_size}{power})" if info.spatial_dims else "image + genetics"
            print(f"{name:20s} {count_parameters_of(name) / 1e6:8.2f}M  {size:>16s}  {info.description}")

    run_guarded(go)


@models_app.command("info")
def models_info(
    name: str = typer.Argument(..., help="Registered model name."),
    input_size: int = typer.Option(128, "--input-size", help="Input edge in voxels (cubic) or pixels (square, 2D models)."),
    batch_size: int = typer.Option(2, "--batch-size", help="Training batch size."),
) -> None:
    """Parameters, FLOPs and estimated training memory of a model at an input size (nothing is allocated).

    [bold]Examples[/bold]

      $ alzmri models info r3d_18 --input-size 128 --batch-size 2

      $ alzmri models info liu2022 --input-size 96
    """

    def go() -> None:
        import alzmri.fusion  # noqa: F401  (registers the fusion models)
        from alzmri.models import model_info
        from alzmri.models.profile import profile_model

        info = model_info(name)
        if info.uses_genetics:
            encoder = info.defaults.get("encoder")
            print(f"{name}: {info.description}\n  image + genetics: its cost is its image encoder's" + (f" (default {encoder}: 'alzmri models info {encoder}')" if encoder else " (none: genetics only)")
                  + " plus the genetic tokens and attention, small next to it")  # fmt: skip
            return
        profile = profile_model(name, input_size, batch_size)
        print(f"{name}: {info.description}")
        print(f"  parameters          {profile.parameters / 1e6:.2f} M")
        power = "²" if info.spatial_dims == 2 else "³"
        print(f"  input               {batch_size} x 1 x {input_size}{power} (accepts ≥ {info.min_input_size}{power}, designed for {info.default_input_size}{power})")
        print(f"  forward             {profile.forward_gflops:.1f} GFLOPs per batch")
        print(f"  activations         {profile.activation_gb:.2f} GB per forward pass (float32)")
        print(f"  training step peak  ≈ {profile.train_gb:.2f} GB (weights, grads, Adam state, saved activations; float32)")
        print(f"  Grad-CAM layer      {info.gradcam_layer}")

    run_guarded(go)


def _version(value: bool) -> None:
    if value:
        print(f"alzmri {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version.")) -> None:
    pass


def main() -> None:
    """Console entry point."""
    app()
