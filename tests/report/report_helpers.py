"""Constants shared by the report tests and their fixture (tests/report/conftest.py)."""

RECIPE = ["model.name=test_resnet", "data.image_size=32", "train.epochs=1", "data.num_workers=0", "train.batch_size=16",
          "data.name=synthbirds"]
ATTACK_EPS = [0.0, 0.1]
ATTACK_IMAGES = 8  # test images the fixture's FGSM sweep attacks
