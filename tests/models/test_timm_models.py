"""timm models as teachers and students, offline: models built with pretrained=False, saved to
files, loaded back through the specs; preprocessing from each model's own configuration."""
import numpy as np
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from conftest import write_tree
from fkd_ffcv.data.beton import Beton
from fkd_ffcv.records.crops import cut_crops
from fkd_ffcv.data.fields import SOFT_LABEL_FIELDS
from fkd_ffcv.labeling.label import LabelingSettings, label_beton
from fkd_ffcv.models.exports import load_weights, save_weights
from fkd_ffcv.models.students import build_model
from fkd_ffcv.records.soft_labels import FLAG_FLIP
from fkd_ffcv.labeling.teachers import Teacher
from fkd_ffcv.models.timm_models import resolve


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """3-class test models of timm: test_resnet (bilinear, mean/std 0.5) as a .pth state
    dict, test_efficientnet (bicubic, ImageNet mean/std) as .safetensors."""
    folder = tmp_path_factory.mktemp('timm')
    torch.manual_seed(0)
    resnet, efficientnet = folder / 'resnet.pth', folder / 'efficientnet.safetensors'
    torch.save({'state_dict': timm.create_model('test_resnet', num_classes=3).state_dict()},
               resnet)
    save_file(timm.create_model('test_efficientnet', num_classes=3).state_dict(),
              str(efficientnet))
    return {'test_resnet': resnet, 'test_efficientnet.r160_in1k': efficientnet}


def own_probs(name, path, crops):
    """Probabilities computed here from timm alone: the model and its pretrained config."""
    cfg = timm.models.get_pretrained_cfg(name)
    model = timm.create_model(name, num_classes=3).eval()
    state = torch.load(path) if str(path).endswith('.pth') else None
    if state is None:
        from safetensors.torch import load_file
        state = load_file(str(path))
    model.load_state_dict(state.get('state_dict', state))
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)


def test_teachers_are_fed_as_their_timm_configuration_says(checkpoints):
    teachers = {name: Teacher(f'timm:{name}:{path}') for name, path in checkpoints.items()}
    resnet, efficientnet = teachers['test_resnet'], teachers['test_efficientnet.r160_in1k']
    assert (resnet.input_size, resnet.interpolation) == (160, 'antialias')  # timm's PIL bilinear
    assert (efficientnet.input_size, efficientnet.interpolation) == (160, 'bicubic')
    assert resnet.preprocess[0].mean == (0.5, 0.5, 0.5)
    assert efficientnet.preprocess[0].mean == (0.485, 0.456, 0.406)
    assert resnet.num_classes == efficientnet.num_classes == 3  # read from the checkpoints
    crops = np.random.default_rng(0).integers(0, 256, (4, 160, 160, 3), dtype=np.uint8)
    for name, teacher in teachers.items():
        assert torch.allclose(teacher.outputs(crops), own_probs(name, checkpoints[name], crops),
                              atol=1e-5)


def test_a_timm_teacher_labels_a_beton(image_tree, checkpoints, tmp_path):
    write_tree(image_tree, tmp_path / 'images.beton', 'jpg')
    teacher = Teacher(f"timm:test_resnet:{checkpoints['test_resnet']}")
    label_beton(tmp_path / 'images.beton', tmp_path / 'labelled.beton', teacher,
                LabelingSettings(num_records=3, label_type='marginal_smoothing_k2',
                                 chunk_images=6, batch_size=16),
                tmp_path / 'work', progress=False)
    beton = Beton(tmp_path / 'labelled.beton')
    assert beton.manifest.soft_labels.teacher['input_size'] == 160
    for i in (0, 5):
        rec = {name: np.array(beton.array(name, i)) for name in SOFT_LABEL_FIELDS}
        # the recorded box, resized to 160 px with the model's own (PIL bilinear) interpolation
        crops = cut_crops(beton.image(i), rec['fkd_boxes'], rec['fkd_flags'] & FLAG_FLIP > 0,
                          160, 'antialias')
        expected = own_probs('test_resnet', checkpoints['test_resnet'], crops)
        assert np.array_equal(rec['fkd_classes'][:, 0], expected.argmax(1).numpy())


def test_timm_and_torchvision_teachers_make_one_ensemble(checkpoints, tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / 'r18.pt')
    specs = [f"timm:test_resnet:{checkpoints['test_resnet']}",
             f"torchvision:resnet18:{tmp_path / 'r18.pt'}"]
    with pytest.raises(ValueError, match='want different crops'):  # 160 antialias, 224 bicubic
        Teacher(specs)
    ensemble = Teacher(specs, input_size=64, interpolation='bilinear')
    crops = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    members = [Teacher([s], input_size=64, interpolation='bilinear') for s in specs]
    expected = (members[0].outputs(crops) + members[1].outputs(crops)) / 2
    assert torch.allclose(ensemble.outputs(crops), expected, atol=1e-6)
    assert [n['mean'] for n in ensemble.describe()['normalisation']] == \
        [(0.5, 0.5, 0.5), (0.485, 0.456, 0.406)]  # each member its own


def test_old_names_resolve_and_load(tmp_path):
    assert resolve('tf_efficientnet_l2_ns_475') == 'tf_efficientnet_l2.ns_jft_in1k_475'
    assert resolve('gluon_senet154') == 'senet154.gluon_in1k'
    assert resolve('gluon_resnet152_v1s') == 'resnet152s.gluon_in1k'
    assert resolve('tf_efficientnet_b4_ns') == 'tf_efficientnet_b4.ns_jft_in1k'
    torch.save(timm.create_model('resnet18', num_classes=4).state_dict(), tmp_path / 'r.pth')
    teacher = Teacher(f"timm:gluon_resnet18_v1b:{tmp_path / 'r.pth'}")  # resnet18.gluon_in1k
    assert teacher.num_classes == 4 and teacher.input_size == 224


def test_bad_timm_names_files_and_sizes_are_named(checkpoints, tmp_path):
    with pytest.raises(ValueError, match="unknown timm model 'resnet5o'.*resnet50"):
        resolve('resnet5o')
    with pytest.raises(ValueError, match="no pretrained tag 'nope'.*r160_in1k"):
        resolve('test_resnet.nope')
    with pytest.raises(ValueError, match=r"does not fit timm test_efficientnet.*missing \["):
        Teacher(f"timm:test_efficientnet:{checkpoints['test_resnet']}")
    with pytest.raises(ValueError, match='give its weights'):
        Teacher('timm:test_resnet')
    torch.save(timm.create_model('test_vit', num_classes=3).state_dict(), tmp_path / 'vit.pth')
    with pytest.raises(ValueError, match='takes only 160 px inputs, not the 32 px'):
        Teacher(f"timm:test_vit:{tmp_path / 'vit.pth'}", input_size=32)


def test_a_timm_student_exports_what_timm_loads(tmp_path):
    torch.manual_seed(0)
    model = build_model('timm:test_vit', 7, image_size=32, patch_size=4, drop_path=0.1)
    assert model.input_normalisation == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert model(torch.zeros(2, 3, 48, 40)).shape == (2, 7)  # dynamic image size
    arch = {'arch': 'timm:test_vit', 'image_size': 32, 'patch_size': 4, 'drop_path': 0.1}
    save_weights(tmp_path / 'w.pt', model, arch, list('abcdefg'),
                 dict(input_size=32, interpolation='area', mean=[0.5] * 3, std=[0.5] * 3))
    saved = torch.load(tmp_path / 'w.pt', weights_only=True)
    assert saved['timm'] == {'model_name': 'test_vit', 'num_classes': 7, 'drop_path_rate': 0.1,
                             'img_size': 32, 'patch_size': 4, 'dynamic_img_size': True}
    plain = timm.create_model(**saved['timm']).eval()
    plain.load_state_dict(saved['model'])  # strict
    rebuilt, _, _ = load_weights(tmp_path / 'w.pt')
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain(x), rebuilt(x)) and torch.equal(plain(x), model.eval()(x))


def test_a_timm_student_starts_from_weights_of_another_size_and_class_count(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model('test_vit')  # 160 px, 16 px patches, 1000 classes
    save_file(source.state_dict(), str(tmp_path / 'vit.safetensors'))
    model = build_model('timm:test_vit', 5, image_size=32, patch_size=4,
                        weights=str(tmp_path / 'vit.safetensors'))
    assert model.head.out_features == 5
    assert model.pos_embed.shape[1] == 1 + 8 * 8  # resampled by timm's own filter
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    torch.save(timm.create_model('test_resnet').state_dict(), tmp_path / 'resnet.pth')
    with pytest.raises(ValueError, match=r"resnet.pth does not fit timm test_vit.*missing"):
        build_model('timm:test_vit', 5, weights=str(tmp_path / 'resnet.pth'))


class Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError('mat1 and mat2 shapes cannot be multiplied')


def broken_teacher():
    return Broken(), {'input_size': 48}


def test_teacher_checkpoints_and_probes_that_cannot_work_are_named(checkpoints, tmp_path):
    state = timm.create_model('test_resnet', num_classes=3).state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith('fc.')}, tmp_path / 'n.pth')
    with pytest.raises(ValueError, match=r"n.pth holds no classifier for timm test_resnet "
                                         r"\(looked for fc.weight"):
        Teacher(f"timm:test_resnet:{tmp_path / 'n.pth'}")
    with pytest.raises(ValueError, match='teacher test_timm_models:broken_teacher cannot take '
                                         '48 px crops: mat1 and mat2'):
        Teacher('test_timm_models:broken_teacher')
    (tmp_path / 'bad.safetensors').write_bytes(b'not a safetensors file at all')
    with pytest.raises(ValueError, match='bad.safetensors: not a readable safetensors file'):
        Teacher(f"timm:test_resnet:{tmp_path / 'bad.safetensors'}")
    teacher = Teacher(f"timm:test_resnet:{checkpoints['test_resnet']}")
    assert teacher.describe()['models'] == ['timm:test_resnet.r160_in1k']  # the tag it used


def test_names_and_configurations_that_cannot_work_are_named(monkeypatch):
    from fkd_ffcv.models import timm_models
    with pytest.raises(ValueError, match="'gluon_senet154' is an old name for "
                                         "'senet154.gluon_in1k'"):
        resolve('gluon_senet154.gluon_in1k')
    real = timm_models.pretrained_config
    monkeypatch.setattr(timm_models, 'pretrained_config',
                        lambda name: {**real(name), 'input_size': (3, 224, 160)})
    with pytest.raises(ValueError, match='takes 224x160 inputs; crops here are square'):
        timm_models.preprocessing('test_resnet')
    monkeypatch.setattr(timm_models, 'pretrained_config',
                        lambda name: {**real(name), 'interpolation': 'nearest'})
    with pytest.raises(ValueError, match="trained with 'nearest' interpolation"):
        timm_models.preprocessing('test_resnet')


def test_a_timm_cnn_student_is_built_as_timm_builds_it(tmp_path):
    from fkd_ffcv.models.resnets import BlurPoolConv2d
    model = build_model('timm:test_resnet', 4, blurpool=True)  # blurpool is not for timm
    assert not any(isinstance(m, BlurPoolConv2d) for m in model.modules())
    assert model.timm_args == {'model_name': 'test_resnet', 'num_classes': 4}
    with pytest.raises(ValueError, match='timm test_resnet takes no --model.image_size'):
        build_model('timm:test_resnet', 4, image_size=64)
