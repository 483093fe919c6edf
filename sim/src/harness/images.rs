//! The images a stack needs: offline ones built (or found by their
//! recipe's tag), upstream ones pulled (or found).

use bollard::Docker;

use crate::error::Result;
use crate::images::build::{ensure_offline, ensure_upstream};
use crate::images::{recipe, ImageSet};
use crate::progress::Progress;
use crate::runtime::docker;
use crate::stack::ServiceKind;

/// Build (offline) or pull (upstream) the images for the given services.
pub async fn build_images(
    set: ImageSet,
    kinds: &[ServiceKind],
    p: &Progress,
) -> Result<Vec<crate::images::build::ImageOutcome>> {
    let docker = docker::connect(p).await?;
    Ok(ensure_images(&docker, set, kinds, p).await?)
}

/// Every image the services need in a set: offline ones built (or found by
/// their recipe's tag), upstream ones pulled (or found).
pub(crate) async fn ensure_images(
    docker: &Docker,
    set: ImageSet,
    kinds: &[ServiceKind],
    p: &Progress,
) -> std::result::Result<Vec<crate::images::build::ImageOutcome>, crate::images::build::ImageError> {
    match set {
        ImageSet::Offline => {
            // The base is also where companion binaries run.
            let mut recipes = vec![recipe::base()];
            recipes.extend(kinds.iter().flat_map(|k| recipe::for_service_all(*k)));
            ensure_offline(docker, &recipes, p).await
        }
        ImageSet::Upstream => {
            let mut out = vec![];
            let images = kinds.iter().flat_map(|k| crate::images::images_for(*k, set));
            for image in images.chain([crate::images::UPSTREAM_DEBIAN.to_string()]) {
                out.push(ensure_upstream(docker, &image, p).await?);
            }
            Ok(out)
        }
    }
}
