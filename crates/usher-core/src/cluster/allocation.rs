//! How one server's slots are split among the live instances: a floor
//! for each, then max-min fair by demand, then what nobody asked for in
//! even parts. The same inputs give the same split on every instance, so
//! no leader is needed to compute it.

/// Splits `capacity` slots among instances whose demands (sessions live
/// and queued for this server) are `demands`, in a fixed order (the
/// instances' names, sorted). `rotation` picks which instance gets the
/// first of the slots that do not divide evenly, so a server with fewer
/// slots than instances is not always given to the same ones.
///
/// The result has one share per instance and never sums above `capacity`.
pub fn allocate(capacity: u32, demands: &[u32], rotation: u64) -> Vec<u32> {
    let n = demands.len();
    if n == 0 {
        return Vec::new();
    }
    let start = (rotation % n as u64) as usize;
    // Every live instance can seat one client without waiting for the next
    // allocation, when there are enough slots to go round.
    let floor = u32::from(capacity as usize >= n);
    let mut shares = vec![floor; n];
    let mut left = capacity - floor * n as u32;

    // Water-filling: raise every unmet demand by the same level until the
    // slots or the demands run out.
    loop {
        let unmet: Vec<usize> = (0..n).filter(|&i| shares[i] < demands[i]).collect();
        if unmet.is_empty() || left == 0 {
            break;
        }
        let level = left / unmet.len() as u32;
        if level == 0 {
            for i in rotated(start, n).filter(|i| unmet.contains(i)).take(left as usize) {
                shares[i] += 1;
                left -= 1;
            }
            break;
        }
        for &i in &unmet {
            let give = (demands[i] - shares[i]).min(level);
            shares[i] += give;
            left -= give;
        }
    }

    // Spare slots go out evenly, so an instance whose demand rises finds
    // some already in hand.
    let each = left / n as u32;
    for share in &mut shares {
        *share += each;
    }
    left -= each * n as u32;
    for i in rotated(start, n).take(left as usize) {
        shares[i] += 1;
    }
    shares
}

fn rotated(start: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (start + k) % n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn idle_instances_split_evenly() {
        assert_eq!(allocate(10, &[0, 0, 0], 0), vec![4, 3, 3]);
        assert_eq!(allocate(10, &[0, 0, 0], 1), vec![3, 4, 3]);
    }

    #[test]
    fn demand_takes_what_idle_instances_do_not_need() {
        // One busy instance, two idle: each idle one keeps its floor.
        assert_eq!(allocate(10, &[300, 0, 0], 0), vec![8, 1, 1]);
        // Two busy: the slots split between them, the idle one keeps 1.
        assert_eq!(allocate(10, &[100, 100, 0], 0), vec![5, 4, 1]);
    }

    #[test]
    fn small_demands_are_met_and_the_rest_is_shared() {
        assert_eq!(allocate(10, &[2, 9, 0], 0), vec![2, 7, 1]);
    }

    #[test]
    fn fewer_slots_than_instances_go_to_demand_then_by_rotation() {
        assert_eq!(allocate(2, &[0, 5, 5], 0), vec![0, 1, 1]);
        assert_eq!(allocate(1, &[5, 5, 5], 0), vec![1, 0, 0]);
        assert_eq!(allocate(1, &[5, 5, 5], 2), vec![0, 0, 1]);
        assert_eq!(allocate(1, &[0, 0, 0], 1), vec![0, 1, 0]);
    }

    proptest! {
        #[test]
        fn never_more_than_capacity_and_all_of_it_is_used(
            capacity in 0u32..200,
            demands in proptest::collection::vec(0u32..300, 1..8),
            rotation in any::<u64>(),
        ) {
            let shares = allocate(capacity, &demands, rotation);
            prop_assert_eq!(shares.len(), demands.len());
            prop_assert_eq!(shares.iter().sum::<u32>(), capacity);
            // Max-min fair: an instance below its demand never has less
            // than another instance's share minus one (integer split).
            for i in 0..shares.len() {
                if shares[i] < demands[i] {
                    for j in 0..shares.len() {
                        prop_assert!(shares[i] + 1 >= shares[j].min(demands[j].max(1)),
                            "{:?} of {:?}", shares, demands);
                    }
                }
            }
        }
    }
}
