"""A setup()-style classifier with a dropout field and named layers."""

# example: Classifier(hidden=16, num_classes=3)(jnp.ones((4, 7)), train=False)

import flax.linen as nn


class Classifier(nn.Module):
    hidden: int
    num_classes: int
    dropout_rate: float = 0.2

    def setup(self):
        self.fc1 = nn.Dense(self.hidden)
        self.norm = nn.LayerNorm()
        self.drop = nn.Dropout(self.dropout_rate)
        self.head = nn.Dense(self.num_classes)

    def features(self, x, train):
        x = nn.relu(self.norm(self.fc1(x)))
        return self.drop(x, deterministic=not train)

    def __call__(self, x, train: bool = False):
        return self.head(self.features(x, train))
