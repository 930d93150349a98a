//! A container start through Garden, lifecycles bind-mounted against
//! uploaded, beside the engine's own create + start of the same image, in
//! one run: `cargo bench -p lattice-garden --bench create -- [--rounds N]`
//! (needs Docker and busybox-static). Rounds alternate the three, so load
//! changes hit each alike.

use std::time::{Duration, Instant};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use lattice_garden::docker::{DockerGarden, DockerGardenConfig, LifecycleDelivery};
use lattice_garden::{ContainerSpec, Garden};
use lattice_testkit::docker::OwnerGuard;
use lattice_testkit::{images, lifecycles};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rounds = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().ok_or("--rounds needs a number")?.parse()?,
            // cargo bench passes --bench.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load.trim());
    let dir = lifecycles::build_static();
    let connect = |delivery| {
        DockerGarden::connect(DockerGardenConfig {
            lifecycle_delivery: delivery,
            ..DockerGardenConfig::new(&dir)
        })
    };
    let mounted = connect(LifecycleDelivery::Mount).await?;
    let uploaded = connect(LifecycleDelivery::Upload).await?;
    let engine = lattice_testkit::docker::connect().await;
    let rootfs = images::busybox_image().await;
    let image = rootfs
        .trim_start_matches("docker:///")
        .replacen('#', ":", 1);
    let guard = OwnerGuard::new("garden-bench");

    let mut times: [Vec<Duration>; 3] = Default::default();
    for round in 0..rounds {
        for (which, garden) in [(0, &mounted), (1, &uploaded)] {
            let spec = ContainerSpec {
                handle: format!("{}-{round}-{which}", guard.owner()),
                rootfs: rootfs.clone(),
                properties: guard.properties(),
                ..Default::default()
            };
            let started = Instant::now();
            let info = garden.create(spec).await?;
            times[which].push(started.elapsed());
            garden.destroy(&info.handle).await?;
        }
        // The anchor: the engine alone, no lifecycle at all.
        let name = format!("{}-{round}-engine", guard.owner());
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(vec!["sleep".to_string(), "1000".to_string()]),
            labels: Some(guard.properties().into_iter().collect()),
            ..Default::default()
        };
        let started = Instant::now();
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        engine.create_container(Some(options), body).await?;
        engine.start_container(&name, None).await?;
        engine.inspect_container(&name, None).await?;
        times[2].push(started.elapsed());
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        engine.remove_container(&name, Some(options)).await?;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    let labels = [
        "Garden create, lifecycles bind-mounted",
        "Garden create, lifecycles uploaded",
        "engine create + start + inspect (anchor)",
    ];
    for (label, runs) in labels.iter().zip(&times) {
        let mut sorted = runs.clone();
        sorted.sort();
        let ms: Vec<String> = runs.iter().map(|d| d.as_millis().to_string()).collect();
        println!(
            "{label}: median {} ms ({} rounds: {})",
            sorted[sorted.len() / 2].as_millis(),
            runs.len(),
            ms.join(", ")
        );
    }
    Ok(())
}
