import torch
from torch import nn

from diffusion import classifier, data
from diffusion.training import fit


def test_classifier_maps_digits_to_ten_logits():
    model = classifier.Classifier()
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def Oracle() -> nn.Module:
    """Reads the digit off the brightest of the first pixels: body = flatten, head = identity."""
    model = nn.Sequential(nn.Flatten(), nn.Identity())
    model.register_parameter("p", nn.Parameter(torch.zeros(())))
    return model


def test_accuracy_counts_matches_and_clamps_inputs():
    images = torch.zeros(4, 1, 28, 28)
    for i, k in enumerate([3, 5, 7, 9]):
        images[i, 0, 0, k] = 5.0  # out of range: clamped to 1, still the brightest
    images[3, 0, 0, 0] = 2.0  # ties at 1 after clamping: argmax picks pixel 0, not 9
    assert classifier.accuracy(Oracle(), images, torch.tensor([3, 5, 7, 9])) == 0.75


def test_a_few_hundred_steps_learn_mnist():
    x, y = data.as_tensor(data.load("train"))
    xt, yt = data.as_tensor(data.load("test"))
    torch.manual_seed(4321)
    model = classifier.Classifier()
    history = fit(model, classifier.cross_entropy_loss, (x[:3000], y[:3000]), epochs=1, batch_size=64, lr=1e-3,
                  lr_decay=True, seed=4321, autocast_dtype="bfloat16")
    assert len(history.losses) == 47 and history.losses[-1] < history.losses[0]
    assert classifier.accuracy(model, xt[:1000], yt[:1000]) > 0.8


def test_embed_returns_labels_and_penultimate_features():
    model = classifier.Classifier().eval()
    images = torch.rand(5, 1, 28, 28)
    labels, features = classifier.embed(model, images, batch_size=2)
    assert labels.shape == (5,) and features.shape == (5, 128)
    assert torch.equal(labels, model(images).argmax(1))
    assert (features >= 0).all()  # after the ReLU
