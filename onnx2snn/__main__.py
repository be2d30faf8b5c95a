import sys

from .cli import main

if __name__ == "__main__":  # `python -m onnx2snn`; importing the module (docs tooling) runs nothing
    sys.exit(main())
