"""Choices and defaults shared by the package and its command lines.

Kept free of heavy imports: importing ffcv costs seconds (numba compiles a typed dict at import),
so the scripts validate their options against this module before loading the rest.
"""
IMAGE_FIELD, LABEL_FIELD, PATH_FIELD = 'image', 'label', 'path'
# FKD crop records, N per image (see crops.py and soft_labels.py for their meaning).
BOXES_FIELD, FLAGS_FIELD = 'fkd_boxes', 'fkd_flags'
CLASSES_FIELD, CODES_FIELD = 'fkd_classes', 'fkd_codes'
EMBEDDING_FIELD = 'fkd_embedding'  # self-supervised FKD: a teacher embedding per record (int8)
SOFT_LABEL_FIELDS = (BOXES_FIELD, FLAGS_FIELD, CLASSES_FIELD, CODES_FIELD)  # soft_label_fields
# A record's colour augmentation, where the beton replays one (records/colour.py): COLOUR_BYTES
# per record, drawn by --labels.colour (COLOUR_AUGMENTATIONS; 'none' stores no field).
COLOUR_FIELD, COLOUR_BYTES = 'fkd_colour', 6
COLOUR_AUGMENTATIONS = ('none', 'moco_v2', 's2bnn')
RECORD_FIELDS = SOFT_LABEL_FIELDS + (EMBEDDING_FIELD, COLOUR_FIELD)  # every field a record may have
EMBEDDING_KINDS = ('auto', 'projection', 'features')  # an embedding teacher's (models/heads.py)
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'  # Debian's dataset-fashion-mnist
WRITE_MODES = ('raw', 'jpg', 'smart', 'proportion')  # RGBImageField's write modes
SMART_THRESHOLD = 224 * 224 * 3  # 'smart': JPEG when raw pixels would take more bytes than this
ON_ERROR = ('fail', 'skip')      # what the writer does with an unusable input file
PAGE_SIZE = 8 * 1024 * 1024      # FFCV's default page (power of two, 2 MiB <= page < 4 GiB)
TEACHER_RECORDS = 500            # crop records per image from a teacher: FKD's N (soft_labels.md)
LABELLED_SUFFIX = '_fkd'         # x.beton labelled -> x_fkd.beton, unless --labels.out names it
MAX_PIXELS = 178_956_970         # refuse larger images; Pillow's own hard limit as well
# labeling/teachers.py: fp32 is exact, the others keep the head in fp32
TEACHER_PRECISIONS = ('fp32', 'bf16', 'fp16')
PRECISIONS = ('auto', 'bf16', 'fp16', 'fp32')  # training.precision (devices.resolve_precision)
# How the student meets MEAL V2's discriminator (discriminator.py, meal.disc_gradient)
DISCRIMINATOR_GRADIENTS = ('shared', 'reversed')
# The loaders' crop resize (resample.py): antialias is the default, chosen by the speed and
# quality measurements in docs/benchmarks.md ("Resize filters") and the accuracy ones in
# docs/results.md ("Resize filters and accuracy").
RESIZE_FILTERS = ('antialias', 'bilinear', 'bicubic', 'area')
DEFAULT_RESIZE = 'antialias'
# RGB in [0, 1] as torchvision's ImageNet weights (and most timm ones) were trained to take it:
# the input normalisation of a model that records none of its own.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_CROP = 224 / 256  # the centre crop ImageNet models are evaluated with (256 px -> 224)
# The student architectures models/students.py registers by name and by family prefix (listed here
# so that option_checks.py can check a name without importing torch).
STUDENT_ARCHS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'small_resnet', 'sret_t',
                 'sret_lt', 'sret_s')
STUDENT_PREFIXES = ('timm:', 'torchvision:')
# The teacher kinds labeling/teacher_specs.py registers (`<kind>:...`), listed here so that
# option_checks.py can find the file a spec names without importing torch: `<kind>:<file>`, or
# `<kind>:<name>:<file>` for the kinds that also name an architecture or model.
TEACHER_KINDS = ('checkpoint', 'moco', 'timm', 'torchscript', 'torchvision')
NAMED_TEACHER_KINDS = ('moco', 'timm', 'torchvision')
