#!/usr/bin/env bash
# The ffem workflow end to end, as `make demo` runs it (see README.md).
#
#   DATA unset: a generated set of synthetic identities (drawn cartoons, not
#               people; their boxes and landmarks are known, so detection is
#               skipped for them) plus MTCNN on the public-domain astronaut
#               photo that scikit-image ships.
#   DATA=DIR:   your own DIR/<identity>/<image> photos, detected with MTCNN.
#
# Everything is written under $DEMO (default demo_out/); nothing is downloaded.
set -euo pipefail
DEMO=${DEMO:-demo_out}
DATA=${DATA:-}
FFEM=${FFEM:-.venv/bin/ffem}
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-8}
# Start from an empty $DEMO, but only ever delete a folder an earlier demo made.
if [ -e "$DEMO" ] && [ -n "$(ls -A "$DEMO" 2>/dev/null)" ] && [ ! -f "$DEMO/.ffem-demo" ]; then
  echo "error: $DEMO exists and was not made by the demo; set DEMO to a new folder" >&2
  exit 1
fi
rm -rf "$DEMO"
mkdir -p "$DEMO"
touch "$DEMO/.ffem-demo"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ -z "$DATA" ]; then
  step "MTCNN on a real face: the astronaut photo shipped with scikit-image (public domain, NASA)"
  mkdir -p "$DEMO/astronaut/eileen_collins"
  $PY -c "import sys; from PIL import Image; from skimage.data import astronaut; Image.fromarray(astronaut()).save(sys.argv[1])" \
    "$DEMO/astronaut/eileen_collins/astronaut.png"
  $FFEM detect "$DEMO/astronaut" --output "$DEMO/astronaut/image_list.json"
  cat "$DEMO/astronaut/image_list.json"

  step "Generate a SYNTHETIC face set: 24 drawn identities x 16 images (not real people)"
  $PY -m ffem_cli.data.synthetic "$DEMO/photos" --identities 24 --images 16 --seed 0
  ROOT="$DEMO/photos"
  LIST="$DEMO/photos/image_list.json"
  BACKBONE=tiny
  SIZE=64
else
  step "Detect faces in $DATA with MTCNN"
  ROOT="$DATA"
  LIST="$DEMO/image_list.json"
  $FFEM detect "$DATA" --output "$LIST"
  BACKBONE=mobilefacenet
  SIZE=112
fi

step "Pack: align faces to the 5-point template, write TFRecord shards"
$FFEM pack "$LIST" --root "$ROOT" --output "$DEMO/pack" --align --size "$SIZE" --shards 4

step "Train stage 1: classifier (L2-constrained softmax)"
$FFEM train --data "$DEMO/pack" --run "$DEMO/runs/classifier" --stage classifier \
  --backbone "$BACKBONE" --embedding-size 128 --epochs "$EPOCHS" --batch-size 32 --lr 3e-3

step "Train stage 2: metric fine-tuning (ArcFace) from the classifier's embedder"
$FFEM train --data "$DEMO/pack" --run "$DEMO/runs/arcface" --stage metric \
  --init-from "$DEMO/runs/classifier" --epochs $((EPOCHS / 2)) --batch-size 32 --lr 1e-2

step "Evaluate: retrieval on the labelled folder (Recall@k, R-precision, MAP@R), faces cut with the list's landmarks"
$FFEM eval folder --root "$ROOT" --faces "$LIST" --run "$DEMO/runs/arcface"

step "Export: SavedModel, TFLite (fp32 + float16) and ONNX, each checked against Keras"
$FFEM export --run "$DEMO/runs/arcface" --format savedmodel --format tflite --format onnx \
  --quantize none --quantize float16 --calibration "$DEMO/pack"

step "Use the model: embed the folder, look up one face crop, draw the face map"
$FFEM embed "$ROOT" --faces "$LIST" --run "$DEMO/runs/arcface" --output "$DEMO/embeddings.parquet"
$PY - "$ROOT" "$LIST" "$SIZE" "$DEMO/query.png" <<'PYEOF'
import sys
from PIL import Image
from ffem_cli.data.crop import crop_face
from ffem_cli.data.image_list import load_image_list
from ffem_cli.images import read_rgb
root, list_path, size, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rel, entry = sorted(load_image_list(list_path).items())[1]
face = crop_face(read_rgb(f"{root}/{rel}"), entry.box, entry.landmarks, size=size, align=entry.landmarks is not None)
Image.fromarray(face).save(out)
print(f"query: the aligned face of {rel}")
PYEOF
$FFEM search "$DEMO/query.png" --gallery "$DEMO/embeddings.parquet" --run "$DEMO/runs/arcface" -k 5 \
  --output "$DEMO/search.png"
$FFEM map --gallery "$DEMO/embeddings.parquet" --output "$DEMO/facemap.png"

step "Done. Look at:"
ls -1 "$DEMO"/runs/arcface/eval/*/*.png "$DEMO"/search.png "$DEMO"/facemap.png 2>/dev/null || true
echo "run directory: $DEMO/runs/arcface"
