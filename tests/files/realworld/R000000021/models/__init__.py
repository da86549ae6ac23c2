from .dla_simple import *
from .lenet import *
