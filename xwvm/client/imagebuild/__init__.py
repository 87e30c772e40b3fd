"""Offline VM template builder: specs (templates/*.yaml), the mmdebstrap build, manifests."""

from xwvm.client.imagebuild.builder import BuildError, BuildOptions, build
from xwvm.client.imagebuild.manifest import Artifact, Manifest, verify
from xwvm.client.imagebuild.spec import SpecError, TemplateSpec, load_spec, validate_spec_file

__all__ = ["Artifact", "BuildError", "BuildOptions", "Manifest", "SpecError", "TemplateSpec",
           "build", "load_spec", "validate_spec_file", "verify"]
